# ordloop.py RELINK ITERATIONS ORDERFILE
# Fault-driven function ordering: relink with the current order, run the idle proxy (configured
# over xDS, one request) under `perf record -e page-faults`, append every function whose page
# faulted and is not yet listed, repeat until no new function faults (or ITERATIONS).
import subprocess,sys,os,re,bisect,time
HERE=os.path.dirname(os.path.abspath(__file__))
relink=os.path.abspath(sys.argv[1]); iters=int(sys.argv[2]); orderf=os.path.abspath(sys.argv[3])
work=os.path.dirname(relink); binp=os.path.join(work,'mesh-ordered'); pf=os.path.join(work,'pf.data')
order=[l.strip() for l in open(orderf)] if os.path.exists(orderf) else []
def syms(b):
    out=subprocess.run(['nm','-n','-S',b],capture_output=True,text=True).stdout
    a=[];n=[]
    for l in out.splitlines():
        p=l.split()
        if len(p)==4 and p[2] in 'tTwW': a.append(int(p[0],16)); n.append((int(p[1],16),p[3]))
    return a,n
for it in range(iters):
    open(orderf,'w').write(''.join(s+'\n' for s in order))
    subprocess.run([relink,binp,'-Wl,-z,pack-relative-relocs',f'-Wl,--symbol-ordering-file={orderf}','-Wl,--no-warn-symbol-ordering'],check=True)
    subprocess.run(['python3',os.path.join(HERE,'evict.py'),binp])
    env=dict(os.environ,WRAP=f'perf record -q -e page-faults -c 1 -d -o {pf} --')
    st=subprocess.run([os.path.join(HERE,'standalone-perf.sh'),binp,os.path.join(work,'run')],env=env,capture_output=True,text=True).stdout
    time.sleep(1)
    out=subprocess.run(['perf','script','-i',pf,'--show-mmap-events','-F','comm,addr'],capture_output=True,text=True).stdout
    base=None; faults=[]
    for l in out.splitlines():
        if 'PERF_RECORD_MMAP2' in l and binp in l and '@ 0 ' in l:
            base=int(re.search(r'\[0x([0-9a-f]+)\(',l).group(1),16)
        elif base and 'PERF_RECORD' not in l:
            p=l.split()
            try: a=int(p[-1],16)
            except ValueError: continue
            if base<=a<base+0x4000000: faults.append(a-base)
    a,n=syms(binp); have=set(order); new=[]; textfaults=0
    for f in faults:
        i=bisect.bisect_right(a,f)-1
        if i<0: continue
        sz,name=n[i]
        if a[i]<=f<a[i]+max(sz,1):
            textfaults+=1
            if name not in have: have.add(name); new.append(name)
    print(f"iteration {it}: {textfaults} text faults, {len(new)} new functions, {len(order)+len(new)} listed; {st.strip().splitlines()[0] if st.strip() else ''}",flush=True)
    if not new: break
    order+=new
open(orderf,'w').write(''.join(s+'\n' for s in order))
