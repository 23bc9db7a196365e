//! go-bexpr's grammar (v0.1.2, the version Consul pins), as a PEG parser that fails the way
//! the generated Go parser fails: the same ordered choices, the same farthest-failure
//! bookkeeping and the same message formats (`1:8 (7): rule "grouping": Unmatched
//! parentheses`, `1:3 (2): no match found, expected: "!=", "==", ...`), so a client sees
//! Consul's text for a bad expression.
//!
//! The rules below mirror the grammar one to one; where a rule is tried again at the same
//! position (every `and`/`or` level parses its left side twice), its result is remembered,
//! which changes nothing observable and keeps nested parentheses linear instead of 4^depth.

use std::collections::HashMap;

use super::go;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Match),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Match {
    pub(crate) selector: Vec<String>,
    pub(crate) op: Op,
    /// The value as written (unquoted); `None` for `is empty` and `is not empty`.
    pub(crate) value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    /// `value in selector` and `selector contains value`.
    In,
    NotIn,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    /// go-bexpr's names for its operators, as its messages print them.
    pub fn go_name(self) -> &'static str {
        match self {
            Op::Equal => "Equal",
            Op::NotEqual => "Not Equal",
            Op::In => "In",
            Op::NotIn => "Not In",
            Op::IsEmpty => "Is Empty",
            Op::IsNotEmpty => "Is Not Empty",
            Op::Matches => "Matches",
            Op::NotMatches => "Not Matches",
        }
    }
}

/// How deep `or`, `and`, `not` and parentheses may nest. The Go parser has no bound (Go
/// stacks grow); ours recurses on a fixed stack, and no real filter comes near this.
pub(crate) const MAX_NESTING: usize = 512;

pub(crate) fn parse(input: &str) -> Result<Expr, String> {
    let mut p = Parser::new(input);
    let result = p.input();
    if p.too_deep {
        return Err(format!(
            "expression nests and/or/not/parentheses more than {MAX_NESTING} levels deep"
        ));
    }
    if result.is_none() && p.errors.is_empty() {
        let message = format!(
            "{}: no match found, expected: {}",
            p.max_fail,
            expected_list(&p.expected)
        );
        p.errors.push(message);
    }
    // The Go parser reports every distinct error it recorded, even when the input parsed.
    let mut distinct: Vec<String> = Vec::new();
    for e in p.errors {
        if !distinct.contains(&e) {
            distinct.push(e);
        }
    }
    match result {
        Some(expr) if distinct.is_empty() => Ok(expr),
        _ => Err(distinct.join("\n")),
    }
}

/// pigeon's list of what the farthest failure wanted: distinct, sorted, `EOF` last.
fn expected_list(expected: &[String]) -> String {
    let mut items: Vec<&str> = Vec::new();
    let mut eof = false;
    for e in expected {
        if e == "!." {
            eof = true;
        } else if !items.contains(&e.as_str()) {
            items.push(e);
        }
    }
    items.sort_unstable();
    if eof {
        items.push("EOF");
    }
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A position as pigeon counts it: runes per line from 1, a newline starting the next line
/// at column 0, and the byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    offset: usize,
    line: usize,
    col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} ({})", self.line, self.col, self.offset)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rule {
    Or,
    And,
    Not,
}

type Memo = HashMap<(Rule, usize), Option<(Expr, Pos)>>;

struct Parser<'a> {
    src: &'a str,
    pos: Pos,
    /// The farthest position a match failed at, and what was wanted there.
    max_fail: Pos,
    expected: Vec<String>,
    /// Inside a `!` predicate, where pigeon records successes (as `!want`) instead.
    invert: bool,
    errors: Vec<String>,
    memo: Memo,
    depth: usize,
    too_deep: bool,
}

/// `[ \t\r\n]` as pigeon names the character class in its expected lists.
const WS_CLASS: &str = r"[ \t\r\n]";

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Parser<'a> {
        let start = if src.starts_with('\n') {
            Pos {
                offset: 0,
                line: 2,
                col: 0,
            }
        } else {
            Pos {
                offset: 0,
                line: 1,
                col: 1,
            }
        };
        Parser {
            src,
            pos: start,
            max_fail: Pos {
                offset: 0,
                line: 1,
                col: 1,
            },
            expected: Vec::new(),
            invert: false,
            errors: Vec::new(),
            memo: HashMap::new(),
            depth: 0,
            too_deep: false,
        }
    }

    // ---- primitives, each recording failures the way pigeon's matchers do ----

    fn cur(&self) -> Option<char> {
        self.src[self.pos.offset..].chars().next()
    }

    fn advance(&mut self) {
        if let Some(c) = self.cur() {
            self.pos.offset += c.len_utf8();
            self.pos.col += 1;
            if self.cur() == Some('\n') {
                self.pos.line += 1;
                self.pos.col = 0;
            }
        }
    }

    fn fail_at(&mut self, matched: bool, at: Pos, want: &str) {
        if matched != self.invert {
            return;
        }
        if at.offset < self.max_fail.offset {
            return;
        }
        if at.offset > self.max_fail.offset {
            self.max_fail = at;
            self.expected.clear();
        }
        if self.invert {
            self.expected.push(format!("!{want}"));
        } else {
            self.expected.push(want.to_string());
        }
    }

    /// A literal; `want` is how pigeon prints it (Go `%q`).
    fn lit(&mut self, s: &str, want: &str) -> bool {
        let start = self.pos;
        if self.src[start.offset..].starts_with(s) {
            for _ in s.chars() {
                self.advance();
            }
            self.fail_at(true, start, want);
            true
        } else {
            self.fail_at(false, start, want);
            false
        }
    }

    fn class(&mut self, want: &str, accept: fn(char) -> bool) -> bool {
        let start = self.pos;
        match self.cur() {
            Some(c) if accept(c) => {
                self.advance();
                self.fail_at(true, start, want);
                true
            }
            _ => {
                self.fail_at(false, start, want);
                false
            }
        }
    }

    fn any(&mut self) -> bool {
        let start = self.pos;
        if self.cur().is_some() {
            self.advance();
            self.fail_at(true, start, ".");
            true
        } else {
            self.fail_at(false, start, ".");
            false
        }
    }

    /// A sequence: on failure the position goes back to where it started.
    fn seq<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.pos;
        let r = f(self);
        if r.is_none() {
            self.pos = start;
        }
        r
    }

    /// `!e`: succeeds when `e` fails; consumes nothing.
    fn not(&mut self, f: impl FnOnce(&mut Self) -> bool) -> bool {
        let start = self.pos;
        self.invert = !self.invert;
        let ok = f(self);
        self.invert = !self.invert;
        self.pos = start;
        !ok
    }

    /// `&e`: succeeds when `e` does; consumes nothing.
    fn lookahead(&mut self, f: impl FnOnce(&mut Self) -> bool) -> bool {
        let start = self.pos;
        let ok = f(self);
        self.pos = start;
        ok
    }

    /// A `&{ return false, errors.New(message) }` predicate in rule `rule`.
    fn fail_with(&mut self, rule: &str, message: &str) -> Option<()> {
        self.error_at(self.pos, rule, message);
        None
    }

    fn error_at(&mut self, at: Pos, rule: &str, message: &str) {
        self.errors.push(format!("{at}: rule {rule}: {message}"));
    }

    fn text_from(&self, start: Pos) -> &'a str {
        &self.src[start.offset..self.pos.offset]
    }

    fn remembered(
        &mut self,
        rule: Rule,
        parse: impl FnOnce(&mut Self) -> Option<Expr>,
    ) -> Option<Expr> {
        let key = (rule, self.pos.offset);
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone().map(|(expr, end)| {
                self.pos = end;
                expr
            });
        }
        if self.depth >= MAX_NESTING {
            self.too_deep = true;
            return None;
        }
        self.depth += 1;
        let result = parse(self);
        self.depth -= 1;
        self.memo
            .insert(key, result.clone().map(|expr| (expr, self.pos)));
        result
    }

    // ---- the grammar ----

    /// `_ <- [ \t\r\n]+`
    fn ws(&mut self) -> bool {
        if !self.class(WS_CLASS, is_ws) {
            return false;
        }
        while self.class(WS_CLASS, is_ws) {}
        true
    }

    /// `_?`
    fn opt_ws(&mut self) {
        self.ws();
    }

    /// `EOF <- !.`
    fn eof(&mut self) -> bool {
        self.not(|p| p.any())
    }

    /// `Input <- _? "(" _? OrExpression _? ")" _? EOF / _? OrExpression _? EOF`
    fn input(&mut self) -> Option<Expr> {
        if let Some(e) = self.seq(|p| {
            p.opt_ws();
            p.lit("(", "\"(\"").then_some(())?;
            p.opt_ws();
            let e = p.or_expr()?;
            p.opt_ws();
            p.lit(")", "\")\"").then_some(())?;
            p.opt_ws();
            p.eof().then_some(e)
        }) {
            return Some(e);
        }
        self.seq(|p| {
            p.opt_ws();
            let e = p.or_expr()?;
            p.opt_ws();
            p.eof().then_some(e)
        })
    }

    /// `OrExpression <- AndExpression _ "or" _ OrExpression / AndExpression`
    fn or_expr(&mut self) -> Option<Expr> {
        self.remembered(Rule::Or, |p| {
            if let Some(e) = p.seq(|p| {
                let left = p.and_expr()?;
                p.ws().then_some(())?;
                p.lit("or", "\"or\"").then_some(())?;
                p.ws().then_some(())?;
                let right = p.or_expr()?;
                Some(Expr::Or(Box::new(left), Box::new(right)))
            }) {
                return Some(e);
            }
            p.and_expr()
        })
    }

    /// `AndExpression <- NotExpression _ "and" _ AndExpression / NotExpression`
    fn and_expr(&mut self) -> Option<Expr> {
        self.remembered(Rule::And, |p| {
            if let Some(e) = p.seq(|p| {
                let left = p.not_expr()?;
                p.ws().then_some(())?;
                p.lit("and", "\"and\"").then_some(())?;
                p.ws().then_some(())?;
                let right = p.and_expr()?;
                Some(Expr::And(Box::new(left), Box::new(right)))
            }) {
                return Some(e);
            }
            p.not_expr()
        })
    }

    /// `NotExpression <- "not" _ NotExpression / ParenthesizedExpression`; `not not e` is `e`.
    fn not_expr(&mut self) -> Option<Expr> {
        self.remembered(Rule::Not, |p| {
            if let Some(e) = p.seq(|p| {
                p.lit("not", "\"not\"").then_some(())?;
                p.ws().then_some(())?;
                match p.not_expr()? {
                    Expr::Not(inner) => Some(*inner),
                    e => Some(Expr::Not(Box::new(e))),
                }
            }) {
                return Some(e);
            }
            p.paren_expr()
        })
    }

    /// `ParenthesizedExpression "grouping" <- "(" _? OrExpression _? ")" / MatchExpression /
    /// "(" _? OrExpression _? !")" &{ Unmatched parentheses }`
    fn paren_expr(&mut self) -> Option<Expr> {
        if let Some(e) = self.seq(|p| {
            p.lit("(", "\"(\"").then_some(())?;
            p.opt_ws();
            let e = p.or_expr()?;
            p.opt_ws();
            p.lit(")", "\")\"").then_some(e)
        }) {
            return Some(e);
        }
        if let Some(m) = self.match_expr() {
            return Some(Expr::Match(m));
        }
        self.seq(|p| {
            p.lit("(", "\"(\"").then_some(())?;
            p.opt_ws();
            p.or_expr()?;
            p.opt_ws();
            p.not(|p| p.lit(")", "\")\"")).then_some(())?;
            p.fail_with("\"grouping\"", "Unmatched parentheses")?;
            None
        })
    }

    /// `MatchExpression "match" <- MatchSelectorOpValue / MatchSelectorOp / MatchValueOpSelector`
    fn match_expr(&mut self) -> Option<Match> {
        if let Some(m) = self.seq(|p| {
            let selector = p.selector()?;
            let op = p.binary_op()?;
            let value = p.value()?;
            Some(Match {
                selector,
                op,
                value: Some(value),
            })
        }) {
            return Some(m);
        }
        if let Some(m) = self.seq(|p| {
            let selector = p.selector()?;
            let op = p.emptiness_op()?;
            Some(Match {
                selector,
                op,
                value: None,
            })
        }) {
            return Some(m);
        }
        if let Some(m) = self.seq(|p| {
            let value = p.value()?;
            let op = p.in_op()?;
            let selector = p.selector()?;
            Some(Match {
                selector,
                op,
                value: Some(value),
            })
        }) {
            return Some(m);
        }
        self.seq(|p| {
            p.value()?;
            p.in_op()?;
            p.not(|p| p.selector().is_some()).then_some(())?;
            p.fail_with("\"match\"", "Invalid selector")?;
            None
        })
    }

    /// `MatchEqual / MatchNotEqual / MatchContains / MatchNotContains / MatchMatches /
    /// MatchNotMatches`
    fn binary_op(&mut self) -> Option<Op> {
        let symbol = |p: &mut Self, s: &str, want: &str| {
            p.seq(|p| {
                p.opt_ws();
                p.lit(s, want).then_some(())?;
                p.opt_ws();
                Some(())
            })
        };
        if symbol(self, "==", "\"==\"").is_some() {
            return Some(Op::Equal);
        }
        if symbol(self, "!=", "\"!=\"").is_some() {
            return Some(Op::NotEqual);
        }
        if self.words(&[("contains", "\"contains\"")], true).is_some() {
            return Some(Op::In);
        }
        if self
            .words(&[("not", "\"not\""), ("contains", "\"contains\"")], true)
            .is_some()
        {
            return Some(Op::NotIn);
        }
        if self.words(&[("matches", "\"matches\"")], true).is_some() {
            return Some(Op::Matches);
        }
        if self
            .words(&[("not", "\"not\""), ("matches", "\"matches\"")], true)
            .is_some()
        {
            return Some(Op::NotMatches);
        }
        None
    }

    /// `MatchIsEmpty / MatchIsNotEmpty`
    fn emptiness_op(&mut self) -> Option<Op> {
        if self
            .words(&[("is", "\"is\""), ("empty", "\"empty\"")], false)
            .is_some()
        {
            return Some(Op::IsEmpty);
        }
        if self
            .words(
                &[("is", "\"is\""), ("not", "\"not\""), ("empty", "\"empty\"")],
                false,
            )
            .is_some()
        {
            return Some(Op::IsNotEmpty);
        }
        None
    }

    /// `MatchIn / MatchNotIn`
    fn in_op(&mut self) -> Option<Op> {
        if self.words(&[("in", "\"in\"")], true).is_some() {
            return Some(Op::In);
        }
        if self
            .words(&[("not", "\"not\""), ("in", "\"in\"")], true)
            .is_some()
        {
            return Some(Op::NotIn);
        }
        None
    }

    /// `_ w1 _ w2 ... [_]`: keywords each preceded by whitespace, and followed by it when
    /// `trailing` (operators that take a value after them).
    fn words(&mut self, words: &[(&str, &str)], trailing: bool) -> Option<()> {
        self.seq(|p| {
            for (word, want) in words {
                p.ws().then_some(())?;
                p.lit(word, want).then_some(())?;
            }
            if trailing {
                p.ws().then_some(())?;
            }
            Some(())
        })
    }

    /// `Selector "selector" <- Identifier SelectorOrIndex*`
    fn selector(&mut self) -> Option<Vec<String>> {
        let first = self.identifier()?;
        let mut parts = vec![first];
        while let Some(part) = self.selector_or_index() {
            parts.push(part);
        }
        Some(parts)
    }

    /// `Identifier <- [a-zA-Z] [a-zA-Z0-9_]*`
    fn identifier(&mut self) -> Option<String> {
        let start = self.pos;
        if !self.class("[a-zA-Z]", |c| c.is_ascii_alphabetic()) {
            return None;
        }
        while self.class("[a-zA-Z0-9_]", |c| c.is_ascii_alphanumeric() || c == '_') {}
        Some(self.text_from(start).to_string())
    }

    /// `SelectorOrIndex <- "." Identifier / IndexExpression`
    fn selector_or_index(&mut self) -> Option<String> {
        if let Some(ident) = self.seq(|p| {
            p.lit(".", "\".\"").then_some(())?;
            p.identifier()
        }) {
            return Some(ident);
        }
        self.index_expr()
    }

    /// `IndexExpression "index" <- "[" _? StringLiteral _? "]" / "[" _? !StringLiteral
    /// &{ Invalid index } / "[" _? StringLiteral _? !"]" &{ Unclosed index expression }`
    fn index_expr(&mut self) -> Option<String> {
        if let Some(key) = self.seq(|p| {
            p.lit("[", "\"[\"").then_some(())?;
            p.opt_ws();
            let key = p.string_literal()?;
            p.opt_ws();
            p.lit("]", "\"]\"").then_some(key)
        }) {
            return Some(key);
        }
        if self
            .seq(|p| {
                p.lit("[", "\"[\"").then_some(())?;
                p.opt_ws();
                p.not(|p| p.string_literal().is_some()).then_some(())?;
                p.fail_with("\"index\"", "Invalid index")
            })
            .is_some()
        {
            return None;
        }
        self.seq(|p| {
            p.lit("[", "\"[\"").then_some(())?;
            p.opt_ws();
            p.string_literal()?;
            p.opt_ws();
            p.not(|p| p.lit("]", "\"]\"")).then_some(())?;
            p.fail_with("\"index\"", "Unclosed index expression")?;
            None
        })
    }

    /// `Value "value" <- Selector / NumberLiteral / StringLiteral`: a selector-shaped value
    /// is its parts joined with dots.
    fn value(&mut self) -> Option<String> {
        if let Some(parts) = self.selector() {
            return Some(parts.join("."));
        }
        if let Some(n) = self.number_literal() {
            return Some(n);
        }
        self.string_literal()
    }

    /// `NumberLiteral "number" <- "-"? IntegerOrFloat &AfterNumbers / "-"? IntegerOrFloat
    /// !AfterNumbers &{ Invalid number literal }`
    fn number_literal(&mut self) -> Option<String> {
        if let Some(text) = self.seq(|p| {
            let start = p.pos;
            p.lit("-", "\"-\"");
            p.integer_or_float()?;
            p.lookahead(Self::after_numbers)
                .then(|| p.text_from(start).to_string())
        }) {
            return Some(text);
        }
        self.seq(|p| {
            p.lit("-", "\"-\"");
            p.integer_or_float()?;
            p.not(Self::after_numbers).then_some(())?;
            p.fail_with("\"number\"", "Invalid number literal")?;
            None
        })
    }

    /// `AfterNumbers <- &(_ / EOF / ")")`
    fn after_numbers(&mut self) -> bool {
        self.lookahead(|p| p.ws() || p.eof() || p.lit(")", "\")\""))
    }

    /// `IntegerOrFloat <- ("0" / [1-9][0-9]*) ("." [0-9]+)?`
    fn integer_or_float(&mut self) -> Option<()> {
        let integer = self.lit("0", "\"0\"")
            || self
                .seq(|p| {
                    p.class("[1-9]", |c| ('1'..='9').contains(&c))
                        .then_some(())?;
                    while p.class("[0-9]", |c| c.is_ascii_digit()) {}
                    Some(())
                })
                .is_some();
        if !integer {
            return None;
        }
        self.seq(|p| {
            p.lit(".", "\".\"").then_some(())?;
            p.class("[0-9]", |c| c.is_ascii_digit()).then_some(())?;
            while p.class("[0-9]", |c| c.is_ascii_digit()) {}
            Some(())
        });
        Some(())
    }

    /// `StringLiteral "string" <- ('`' RawStringChar* '`' / '"' DoubleStringChar* '"')
    /// { strconv.Unquote } / ('`' RawStringChar* / '"' DoubleStringChar*) EOF
    /// &{ Unterminated string literal }`
    fn string_literal(&mut self) -> Option<String> {
        let start = self.pos;
        let closed = self
            .seq(|p| {
                p.lit("`", "\"`\"").then_some(())?;
                while p.raw_char() {}
                p.lit("`", "\"`\"").then_some(())
            })
            .or_else(|| {
                self.seq(|p| {
                    p.lit("\"", "\"\\\"\"").then_some(())?;
                    while p.double_char() {}
                    p.lit("\"", "\"\\\"\"").then_some(())
                })
            });
        if closed.is_some() {
            // Go's action returns the unquoted value or ("", error): the error is recorded
            // and parsing goes on.
            return Some(match go::unquote(self.text_from(start)) {
                Some(s) => s,
                None => {
                    self.error_at(start, "\"string\"", "invalid syntax");
                    String::new()
                }
            });
        }
        self.seq(|p| {
            let opened = p
                .seq(|p| {
                    p.lit("`", "\"`\"").then_some(())?;
                    while p.raw_char() {}
                    Some(())
                })
                .or_else(|| {
                    p.seq(|p| {
                        p.lit("\"", "\"\\\"\"").then_some(())?;
                        while p.double_char() {}
                        Some(())
                    })
                });
            opened?;
            p.eof().then_some(())?;
            p.fail_with("\"string\"", "Unterminated string literal")?;
            None
        })
    }

    /// `RawStringChar <- !'`' .`
    fn raw_char(&mut self) -> bool {
        self.seq(|p| {
            p.not(|p| p.lit("`", "\"`\"")).then_some(())?;
            p.any().then_some(())
        })
        .is_some()
    }

    /// `DoubleStringChar <- !'"' .`
    fn double_char(&mut self) -> bool {
        self.seq(|p| {
            p.not(|p| p.lit("\"", "\"\\\"\"")).then_some(())?;
            p.any().then_some(())
        })
        .is_some()
    }
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}
