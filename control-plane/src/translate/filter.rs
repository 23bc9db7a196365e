//! The part of Consul's filter language (go-bexpr) that service-resolver subsets use, evaluated
//! against one health entry (`Node`, `Service`) the way Consul evaluates it against a
//! `CheckServiceNode`.
//!
//! Supported: `==`, `!=`, `in`, `not in`, `contains`, `not contains`, `is empty`,
//! `is not empty`, combined with `and`, `or`, `not` and parentheses. Values are `"quoted"`,
//! `` `raw` `` or bare words. Selectors: `Service.{ID,Service,Kind,Address,Port,Tags,Meta}`,
//! `Service.Meta.<key>` (or `Service.Meta["key"]`), `Node.{ID,Node,Address,Datacenter,Meta}`,
//! `Node.Meta.<key>`. `matches` (regular expressions) and `Checks` are rejected, so a filter we
//! cannot evaluate faithfully is reported instead of silently selecting the wrong instances.

use mesh_proto::consul::ServiceEntry;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError(String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

/// A parsed subset filter; the empty filter selects every instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter(Option<Expr>);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match(Field, Op),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equal(String),
    NotEqual(String),
    /// `value in selector` and `selector contains value`.
    Contains(String),
    NotContains(String),
    IsEmpty,
    IsNotEmpty,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    ServiceId,
    ServiceName,
    ServiceKind,
    ServiceAddress,
    ServicePort,
    ServiceTags,
    ServiceMeta,
    ServiceMetaKey(String),
    NodeId,
    NodeName,
    NodeAddress,
    NodeDatacenter,
    NodeMeta,
    NodeMetaKey(String),
}

/// A field's value in one entry. A missing map key is neither equal to nor contains anything,
/// as in go-bexpr.
enum Value<'a> {
    Text(String),
    Missing,
    List(&'a [String]),
    Map(&'a BTreeMap<String, String>),
}

impl Field {
    fn parse(path: &[String]) -> Result<Field, FilterError> {
        let lower: Vec<String> = path.iter().map(|p| p.to_ascii_lowercase()).collect();
        let parts: Vec<&str> = lower.iter().map(String::as_str).collect();
        let field = match parts.as_slice() {
            ["service", "id"] => Field::ServiceId,
            ["service", "service"] => Field::ServiceName,
            ["service", "kind"] => Field::ServiceKind,
            ["service", "address"] => Field::ServiceAddress,
            ["service", "port"] => Field::ServicePort,
            ["service", "tags"] => Field::ServiceTags,
            ["service", "meta"] => Field::ServiceMeta,
            // Map keys keep their case.
            ["service", "meta", _] => Field::ServiceMetaKey(path[2].clone()),
            ["node", "id"] => Field::NodeId,
            ["node", "node"] => Field::NodeName,
            ["node", "address"] => Field::NodeAddress,
            ["node", "datacenter"] => Field::NodeDatacenter,
            ["node", "meta"] => Field::NodeMeta,
            ["node", "meta", _] => Field::NodeMetaKey(path[2].clone()),
            _ => return fail(format!("unsupported selector {:?}", path.join("."))),
        };
        Ok(field)
    }

    fn is_scalar(&self) -> bool {
        !matches!(
            self,
            Field::ServiceTags | Field::ServiceMeta | Field::NodeMeta
        )
    }

    fn value<'a>(&self, e: &'a ServiceEntry) -> Value<'a> {
        let meta = |m: &BTreeMap<String, String>, key: &str| {
            m.get(key)
                .map_or(Value::Missing, |v| Value::Text(v.clone()))
        };
        match self {
            Field::ServiceId => Value::Text(e.service.id.clone()),
            Field::ServiceName => Value::Text(e.service.service.clone()),
            Field::ServiceKind => Value::Text(e.service.kind.clone()),
            Field::ServiceAddress => Value::Text(e.service.address.clone()),
            Field::ServicePort => Value::Text(e.service.port.to_string()),
            Field::ServiceTags => Value::List(&e.service.tags),
            Field::ServiceMeta => Value::Map(&e.service.meta),
            Field::ServiceMetaKey(k) => meta(&e.service.meta, k),
            Field::NodeId => Value::Text(e.node.id.clone()),
            Field::NodeName => Value::Text(e.node.node.clone()),
            Field::NodeAddress => Value::Text(e.node.address.clone()),
            Field::NodeDatacenter => Value::Text(e.node.datacenter.clone()),
            Field::NodeMeta => Value::Map(&e.node.meta),
            Field::NodeMetaKey(k) => meta(&e.node.meta, k),
        }
    }
}

impl Filter {
    pub(crate) fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.len() > MAX_FILTER_LEN {
            return fail(format!("longer than {MAX_FILTER_LEN} bytes"));
        }
        let tokens = tokenize(input)?;
        if tokens.is_empty() {
            return Ok(Filter(None));
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let expr = parser.or()?;
        match parser.peek() {
            None => Ok(Filter(Some(expr))),
            Some(t) => fail(format!("unexpected {t} after a complete expression")),
        }
    }

    pub(crate) fn matches(&self, entry: &ServiceEntry) -> bool {
        self.0.as_ref().is_none_or(|e| eval(e, entry))
    }
}

fn eval(expr: &Expr, entry: &ServiceEntry) -> bool {
    match expr {
        Expr::Or(a, b) => eval(a, entry) || eval(b, entry),
        Expr::And(a, b) => eval(a, entry) && eval(b, entry),
        Expr::Not(a) => !eval(a, entry),
        Expr::Match(field, op) => {
            let value = field.value(entry);
            match op {
                Op::Equal(want) => matches!(value, Value::Text(v) if v == *want),
                Op::NotEqual(want) => !matches!(value, Value::Text(v) if v == *want),
                Op::Contains(want) => contains(&value, want),
                Op::NotContains(want) => !contains(&value, want),
                Op::IsEmpty => is_empty(&value),
                Op::IsNotEmpty => !is_empty(&value),
            }
        }
    }
}

/// go-bexpr's `in`: a substring of a string, an element of a list, a key of a map.
fn contains(value: &Value<'_>, want: &str) -> bool {
    match value {
        Value::Text(v) => v.contains(want),
        Value::Missing => false,
        Value::List(items) => items.iter().any(|i| i == want),
        Value::Map(map) => map.contains_key(want),
    }
}

fn is_empty(value: &Value<'_>) -> bool {
    match value {
        Value::Text(v) => v.is_empty(),
        Value::Missing => true,
        Value::List(items) => items.is_empty(),
        Value::Map(map) => map.is_empty(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Equal,
    NotEqual,
    /// A bare word: a keyword, a selector or an unquoted value.
    Word(String),
    Quoted(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Open => f.write_str("\"(\""),
            Token::Close => f.write_str("\")\""),
            Token::OpenBracket => f.write_str("\"[\""),
            Token::CloseBracket => f.write_str("\"]\""),
            Token::Equal => f.write_str("\"==\""),
            Token::NotEqual => f.write_str("\"!=\""),
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Quoted(q) => write!(f, "string {q:?}"),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':')
}

fn tokenize(input: &str) -> Result<Vec<Token>, FilterError> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => tokens.push(Token::Open),
            ')' => tokens.push(Token::Close),
            '[' => tokens.push(Token::OpenBracket),
            ']' => tokens.push(Token::CloseBracket),
            '=' | '!' => {
                if chars.next_if(|(_, n)| *n == '=').is_none() {
                    return fail(format!("expected \"{c}=\" at offset {at}"));
                }
                tokens.push(if c == '=' {
                    Token::Equal
                } else {
                    Token::NotEqual
                });
            }
            '"' => tokens.push(Token::Quoted(quoted(&mut chars, at)?)),
            '`' => {
                let mut raw = String::new();
                loop {
                    match chars.next() {
                        Some((_, '`')) => break,
                        Some((_, ch)) => raw.push(ch),
                        None => return fail(format!("unterminated string at offset {at}")),
                    }
                }
                tokens.push(Token::Quoted(raw));
            }
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some((_, ch)) = chars.next_if(|(_, n)| is_word_char(*n)) {
                    word.push(ch);
                }
                tokens.push(Token::Word(word));
            }
            other => return fail(format!("unexpected character {other:?} at offset {at}")),
        }
    }
    Ok(tokens)
}

/// A double-quoted string with the escapes users put in filters (`\"`, `\\`, `\n`, `\t`).
fn quoted(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    at: usize,
) -> Result<String, FilterError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            Some((_, '"')) => return Ok(out),
            Some((_, '\\')) => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('"' | '\\'))) => out.push(c),
                Some((_, c)) => return fail(format!("unsupported escape \\{c} in string")),
                None => break,
            },
            Some((_, c)) => out.push(c),
            None => break,
        }
    }
    fail(format!("unterminated string at offset {at}"))
}

/// Filters come from users and are evaluated recursively: these bounds keep a hostile or
/// accidental monster from overflowing the stack (the registry stores any string).
const MAX_FILTER_LEN: usize = 8192;
const MAX_NESTING: usize = 64;

const MATCHES_UNSUPPORTED: &str = "the matches operator (regular expressions) is not supported";

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Open parentheses and `not`s around the current position.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_word(&self, offset: usize) -> Option<&str> {
        match self.tokens.get(self.pos + offset) {
            Some(Token::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek_word(0) == Some(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        let negated = self.eat_word("not");
        let open = !negated && self.peek() == Some(&Token::Open);
        if !negated && !open {
            return self.matcher();
        }
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return fail(format!("nested more than {MAX_NESTING} levels deep"));
        }
        let expr = if negated {
            Expr::Not(Box::new(self.not()?))
        } else {
            self.pos += 1;
            let inner = self.or()?;
            match self.next() {
                Some(Token::Close) => inner,
                Some(t) => return fail(format!("expected \")\", found {t}")),
                None => return fail("unmatched parenthesis"),
            }
        };
        self.depth -= 1;
        Ok(expr)
    }

    /// `value [not] in selector`, or `selector <operator> [value]`.
    fn matcher(&mut self) -> Result<Expr, FilterError> {
        let value_first = match (self.peek_word(1), self.peek_word(2)) {
            (Some("in"), _) => Some(false),
            (Some("not"), Some("in")) => Some(true),
            _ => None,
        };
        if let Some(negated) = value_first {
            let value = self.value()?;
            self.pos += if negated { 2 } else { 1 };
            let (field, _) = self.selector()?;
            let op = if negated {
                Op::NotContains(value)
            } else {
                Op::Contains(value)
            };
            return Ok(Expr::Match(field, op));
        }

        let (field, selector) = self.selector()?;
        let op = match self.next() {
            Some(Token::Equal) => Op::Equal(self.value()?),
            Some(Token::NotEqual) => Op::NotEqual(self.value()?),
            Some(Token::Word(w)) => match w.as_str() {
                "contains" => Op::Contains(self.value()?),
                "is" if self.eat_word("empty") => Op::IsEmpty,
                "is" if self.eat_word("not") && self.eat_word("empty") => Op::IsNotEmpty,
                "not" if self.eat_word("contains") => Op::NotContains(self.value()?),
                "matches" => return fail(MATCHES_UNSUPPORTED),
                "not" if self.peek_word(0) == Some("matches") => {
                    return fail(MATCHES_UNSUPPORTED);
                }
                _ => return fail(format!("expected an operator, found {w:?}")),
            },
            Some(t) => return fail(format!("expected an operator, found {t}")),
            None => return fail("expected an operator, found the end of the filter"),
        };
        if matches!(op, Op::Equal(_) | Op::NotEqual(_)) && !field.is_scalar() {
            return fail(format!(
                "{selector} is a list or map; use in, contains or is empty with it"
            ));
        }
        Ok(Expr::Match(field, op))
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Token::Word(w)) | Some(Token::Quoted(w)) => Ok(w),
            Some(t) => fail(format!("expected a value, found {t}")),
            None => fail("expected a value, found the end of the filter"),
        }
    }

    /// The field and the selector as written, for messages.
    fn selector(&mut self) -> Result<(Field, String), FilterError> {
        let mut path: Vec<String> = match self.next() {
            Some(Token::Word(w)) => w.split('.').map(str::to_string).collect(),
            Some(t) => return fail(format!("expected a selector, found {t}")),
            None => return fail("expected a selector, found the end of the filter"),
        };
        // `Service.Meta["key"]`: for keys a bare word cannot spell.
        if self.peek() == Some(&Token::OpenBracket) {
            self.pos += 1;
            match (self.next(), self.next()) {
                (Some(Token::Quoted(key)), Some(Token::CloseBracket)) => path.push(key),
                _ => return fail("expected [\"key\"] after a selector"),
            }
        }
        Ok((Field::parse(&path)?, path.join(".")))
    }
}
