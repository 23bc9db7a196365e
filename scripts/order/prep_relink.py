# prep_relink.py LINKARGS_FILE WORKDIR -> WORKDIR/relink.sh OUT [extra args]
# Copies the root crate's objects and rustc's temporary symbols.o, drops any existing
# --symbol-ordering-file argument, and writes a relink script around rustc's own linker command.
import re,os,shutil,sys
s=open(sys.argv[1]).read().strip(); w=sys.argv[2]; os.makedirs(w,exist_ok=True)
s=[l for l in s.splitlines() if l.startswith('LC_ALL=')][-1]
for d in set(re.findall(r'"(/[^"]*/deps/rustc[A-Za-z0-9]+)/',s)):
    shutil.copytree(d,os.path.join(w,os.path.basename(d)),dirs_exist_ok=True); s=s.replace(d,os.path.join(w,os.path.basename(d)))
for o in set(re.findall(r'"(/[^"]*/deps/mesh-[0-9a-f]+\.[^"]*\.rcgu\.o)"',s)):
    shutil.copy(o,w); s=s.replace('"'+o+'"','"'+os.path.join(w,os.path.basename(o))+'"')
s=re.sub(r'"-o" "[^"]*"','"-o" "$OUT"',s)
s=re.sub(r' "-Wl,--symbol-ordering-file=[^"]*"| "-Wl,--no-warn-symbol-ordering"','',s)
open(os.path.join(w,'relink.sh'),'w').write('#!/bin/bash\nOUT=$1; shift\n'+s+' "$@"\n'); os.chmod(os.path.join(w,'relink.sh'),0o755)
