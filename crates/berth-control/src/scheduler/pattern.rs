//! The patterns of the cluster query language's `=~` (`matches`) and `!~` (`not_matches`).
//!
//! ECS documents these as Java regular expressions (`java.util.regex.Pattern`). This is the
//! subset of that syntax a placement expression needs, matched in linear time by a Pike VM
//! (no backtracking, so no pattern can make evaluation blow up):
//!
//! - literals, `.` (any character but a line terminator), `^`, `$`;
//! - classes `[abc]`, `[^a-z0-9]`, with `\d \D \w \W \s \S` inside or outside them;
//! - escapes `\t \n \r \f \a \e \xhh \uhhhh`, `\Q...\E`, and `\` before any non-letter;
//! - groups `(...)`, `(?:...)`, alternation `|`;
//! - quantifiers `* + ? {n} {n,} {n,m}` and their reluctant forms (`*?`...), which match the
//!   same strings here since only a yes/no answer is needed.
//!
//! Anything else Java accepts (back references, look-around, possessive quantifiers, flags,
//! `\b`, `\p{..}`, class unions and intersections) is rejected with an error rather than
//! silently read differently.
//!
//! A pattern matches when it matches the **whole** value, like Java's `String.matches`, so
//! `t2.*` selects `t2.small` and `t2` does not.

use std::cell::RefCell;
use std::fmt;

/// Nesting limit for groups, so hostile input cannot overflow the stack.
pub const MAX_NESTING: usize = 100;
/// Largest count in `{n,m}`.
pub const MAX_REPEAT: u32 = 1000;
/// Largest compiled program, in instructions.
pub const MAX_PROGRAM: usize = 10_000;

/// Why a pattern was rejected; `offset` counts characters from the start of the pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct PatternError {
    pub offset: usize,
    pub message: String,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        offset,
        message: message.into(),
    })
}

/// A compiled pattern. Equality and printing use the source text.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    prog: Vec<Inst>,
    classes: Vec<Class>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}
impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, Clone, Default)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
    /// Sets a character matches by *not* being in them (`\D`, `\W`, `\S` inside a class).
    not_in: Vec<Vec<(char, char)>>,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = self.ranges.iter().any(|&(a, b)| a <= c && c <= b)
            || self
                .not_in
                .iter()
                .any(|set| !set.iter().any(|&(a, b)| a <= c && c <= b));
        hit != self.negated
    }
}

#[derive(Debug, Clone)]
enum Node {
    Empty,
    Char(char),
    Any,
    Class(Class),
    Start,
    End,
    Concat(Vec<Node>),
    /// `\Q...\E`, until [`Parser::concat`] splits it into characters.
    Quoted(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Char(char),
    Any,
    Class(u32),
    Start,
    End,
    Split(u32, u32),
    Jmp(u32),
    Match,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')];
const SPACE: &[(char, char)] = &[('\t', '\r'), (' ', ' ')];

fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

/// What a `\` sequence stands for.
enum Escape {
    Char(char),
    Set(&'static [(char, char)], bool),
    Quote(Vec<char>),
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn alt(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut branches = vec![self.concat(depth)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            branches.push(self.concat(depth)?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(branches)
        })
    }

    fn concat(&mut self, depth: usize) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom_at = self.pos;
            let atom = match self.atom(depth)? {
                // `\Q...\E`: a quantifier applies to its last character only, as in Java.
                Node::Quoted(mut quoted) => match quoted.pop() {
                    Some(last) => {
                        items.extend(quoted);
                        last
                    }
                    None if matches!(self.peek(), Some('*' | '+' | '?' | '{')) => {
                        return err(self.pos, "dangling quantifier");
                    }
                    None => continue,
                },
                other => other,
            };
            items.push(self.quantifiers(atom, atom_at)?);
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    fn quantifiers(&mut self, atom: Node, atom_at: usize) -> Result<Node, PatternError> {
        let (min, max) = match self.peek() {
            Some('*') => {
                self.pos += 1;
                (0, None)
            }
            Some('+') => {
                self.pos += 1;
                (1, None)
            }
            Some('?') => {
                self.pos += 1;
                (0, Some(1))
            }
            Some('{') => self.counted()?,
            _ => return Ok(atom),
        };
        if matches!(atom, Node::Start | Node::End) {
            return err(atom_at, "a quantifier cannot follow an anchor");
        }
        match self.peek() {
            Some('?') => self.pos += 1,
            Some('+') => return err(self.pos, "possessive quantifiers are not supported"),
            _ => {}
        }
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return err(self.pos, "dangling quantifier");
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// `{n}`, `{n,}`, `{n,m}`; the cursor is on `{`.
    fn counted(&mut self) -> Result<(u32, Option<u32>), PatternError> {
        let open = self.pos;
        self.pos += 1;
        let min = self.number()?.ok_or_else(|| PatternError {
            offset: open,
            message: "illegal repetition".into(),
        })?;
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            self.number()?
        } else {
            Some(min)
        };
        if self.peek() != Some('}') {
            return err(open, "unclosed counted repetition");
        }
        self.pos += 1;
        if let Some(max) = max {
            if max < min {
                return err(open, "illegal repetition range");
            }
        }
        Ok((min, max))
    }

    fn number(&mut self) -> Result<Option<u32>, PatternError> {
        let start = self.pos;
        let mut n: u32 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            n = n.saturating_mul(10).saturating_add(d);
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        if n > MAX_REPEAT {
            return err(start, format!("repetition count above {MAX_REPEAT}"));
        }
        Ok(Some(n))
    }

    fn atom(&mut self, depth: usize) -> Result<Node, PatternError> {
        let at = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Node::Empty);
        };
        self.pos += 1;
        match c {
            '(' => {
                if depth + 1 > MAX_NESTING {
                    return err(at, format!("groups nested deeper than {MAX_NESTING}"));
                }
                if self.peek() == Some('?') {
                    if self.chars.get(self.pos + 1) == Some(&':') {
                        self.pos += 2;
                    } else {
                        return err(at, "only (?:...) groups are supported");
                    }
                }
                let inner = self.alt(depth + 1)?;
                if self.peek() != Some(')') {
                    return err(at, "unclosed group");
                }
                self.pos += 1;
                Ok(inner)
            }
            '[' => self.class(at),
            '.' => Ok(Node::Any),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '\\' => match self.escape(at)? {
                Escape::Char(c) => Ok(Node::Char(c)),
                Escape::Set(set, negated) => Ok(Node::Class(Class {
                    negated,
                    ranges: set.to_vec(),
                    not_in: Vec::new(),
                })),
                Escape::Quote(chars) => {
                    Ok(Node::Quoted(chars.into_iter().map(Node::Char).collect()))
                }
            },
            '*' | '+' | '?' => err(at, format!("dangling meta character '{c}'")),
            '{' => err(at, "illegal repetition"),
            other => Ok(Node::Char(other)),
        }
    }

    /// After a `\` at `at`; the cursor is on the escaped character.
    fn escape(&mut self, at: usize) -> Result<Escape, PatternError> {
        let Some(c) = self.peek() else {
            return err(at, "trailing backslash");
        };
        self.pos += 1;
        Ok(match c {
            'd' => Escape::Set(DIGIT, false),
            'D' => Escape::Set(DIGIT, true),
            'w' => Escape::Set(WORD, false),
            'W' => Escape::Set(WORD, true),
            's' => Escape::Set(SPACE, false),
            'S' => Escape::Set(SPACE, true),
            't' => Escape::Char('\t'),
            'n' => Escape::Char('\n'),
            'r' => Escape::Char('\r'),
            'f' => Escape::Char('\u{c}'),
            'a' => Escape::Char('\u{7}'),
            'e' => Escape::Char('\u{1b}'),
            'x' => Escape::Char(self.hex(at, 2)?),
            'u' => Escape::Char(self.hex(at, 4)?),
            'Q' => {
                let mut quoted = Vec::new();
                while let Some(q) = self.peek() {
                    if q == '\\' && self.chars.get(self.pos + 1) == Some(&'E') {
                        self.pos += 2;
                        return Ok(Escape::Quote(quoted));
                    }
                    quoted.push(q);
                    self.pos += 1;
                }
                Escape::Quote(quoted)
            }
            c if c.is_ascii_alphanumeric() => {
                return err(at, format!("unsupported escape sequence '\\{c}'"));
            }
            c => Escape::Char(c),
        })
    }

    fn hex(&mut self, at: usize, digits: usize) -> Result<char, PatternError> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let Some(d) = self.peek().and_then(|c| c.to_digit(16)) else {
                return err(at, "illegal hexadecimal escape sequence");
            };
            v = v * 16 + d;
            self.pos += 1;
        }
        char::from_u32(v).map_or_else(|| err(at, "illegal unicode escape sequence"), Ok)
    }

    /// After `[` at `at`.
    fn class(&mut self, at: usize) -> Result<Node, PatternError> {
        let mut class = Class::default();
        if self.peek() == Some('^') {
            class.negated = true;
            self.pos += 1;
        }
        let mut first = true;
        loop {
            let item_at = self.pos;
            let Some(c) = self.peek() else {
                return err(at, "unclosed character class");
            };
            self.pos += 1;
            let lo = match c {
                ']' if !first => break,
                '[' => return err(item_at, "nested character classes are not supported"),
                '&' if self.peek() == Some('&') => {
                    return err(item_at, "character class intersections are not supported")
                }
                '\\' => match self.escape(item_at)? {
                    Escape::Char(c) => c,
                    Escape::Set(set, false) => {
                        class.ranges.extend_from_slice(set);
                        first = false;
                        continue;
                    }
                    Escape::Set(set, true) => {
                        class.not_in.push(set.to_vec());
                        first = false;
                        continue;
                    }
                    Escape::Quote(chars) => {
                        class.ranges.extend(chars.into_iter().map(|c| (c, c)));
                        first = false;
                        continue;
                    }
                },
                c => c,
            };
            first = false;
            // A range `lo-hi`, unless the `-` is the last character of the class.
            if self.peek() == Some('-') && !matches!(self.chars.get(self.pos + 1), Some(']') | None)
            {
                let dash = self.pos;
                self.pos += 1;
                let hi_at = self.pos;
                let hi = match self.peek() {
                    Some('\\') => {
                        self.pos += 1;
                        match self.escape(hi_at)? {
                            Escape::Char(c) => c,
                            _ => return err(hi_at, "illegal character range"),
                        }
                    }
                    Some('[') => return err(hi_at, "nested character classes are not supported"),
                    Some(c) => {
                        self.pos += 1;
                        c
                    }
                    None => return err(at, "unclosed character class"),
                };
                if hi < lo {
                    return err(dash, "illegal character range");
                }
                class.ranges.push((lo, hi));
            } else {
                class.ranges.push((lo, lo));
            }
        }
        Ok(Node::Class(class))
    }
}

struct Compiler {
    prog: Vec<Inst>,
    classes: Vec<Class>,
}

impl Compiler {
    fn push(&mut self, inst: Inst) -> Result<u32, PatternError> {
        if self.prog.len() >= MAX_PROGRAM {
            return err(
                0,
                format!("pattern too large (over {MAX_PROGRAM} instructions)"),
            );
        }
        self.prog.push(inst);
        Ok((self.prog.len() - 1) as u32)
    }

    fn next(&self) -> u32 {
        self.prog.len() as u32
    }

    fn patch(&mut self, at: u32, inst: Inst) {
        if let Some(slot) = self.prog.get_mut(at as usize) {
            *slot = inst;
        }
    }

    fn node(&mut self, node: &Node) -> Result<(), PatternError> {
        match node {
            Node::Empty => {}
            Node::Char(c) => {
                self.push(Inst::Char(*c))?;
            }
            Node::Any => {
                self.push(Inst::Any)?;
            }
            Node::Class(class) => {
                self.classes.push(class.clone());
                self.push(Inst::Class((self.classes.len() - 1) as u32))?;
            }
            Node::Start => {
                self.push(Inst::Start)?;
            }
            Node::End => {
                self.push(Inst::End)?;
            }
            Node::Concat(items) | Node::Quoted(items) => {
                for item in items {
                    self.node(item)?;
                }
            }
            Node::Alt(branches) => {
                // split L1, next; L1: a; jmp end; next: split L2, ...; last branch; end:
                let mut jumps = Vec::new();
                for (i, branch) in branches.iter().enumerate() {
                    if i + 1 < branches.len() {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.node(branch)?;
                        jumps.push(self.push(Inst::Jmp(0))?);
                        let next = self.next();
                        self.patch(split, Inst::Split(split + 1, next));
                    } else {
                        self.node(branch)?;
                    }
                }
                let end = self.next();
                for j in jumps {
                    self.patch(j, Inst::Jmp(end));
                }
            }
            Node::Repeat { node, min, max } => {
                for _ in 0..*min {
                    self.node(node)?;
                }
                match max {
                    None => {
                        let split = self.push(Inst::Split(0, 0))?;
                        self.node(node)?;
                        self.push(Inst::Jmp(split))?;
                        let end = self.next();
                        self.patch(split, Inst::Split(split + 1, end));
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Split(0, 0))?);
                            self.node(node)?;
                        }
                        let end = self.next();
                        for s in splits {
                            self.patch(s, Inst::Split(s + 1, end));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A set of program counters with O(1) insert, membership and clear.
#[derive(Default)]
struct SparseSet {
    dense: Vec<u32>,
    sparse: Vec<u32>,
}

/// Matching buffers, reused between matches on a thread.
#[derive(Default)]
struct Buffers {
    clist: SparseSet,
    nlist: SparseSet,
    stack: Vec<u32>,
}

impl SparseSet {
    /// Empties the set and makes room for program counters below `n`.
    fn reset(&mut self, n: usize) {
        self.dense.clear();
        if self.sparse.len() < n {
            self.sparse.resize(n, 0);
        }
    }
    fn contains(&self, pc: u32) -> bool {
        let i = self.sparse[pc as usize] as usize;
        i < self.dense.len() && self.dense[i] == pc
    }
    fn insert(&mut self, pc: u32) {
        self.sparse[pc as usize] = self.dense.len() as u32;
        self.dense.push(pc);
    }
    fn clear(&mut self) {
        self.dense.clear();
    }
}

impl Pattern {
    /// Parses and compiles `source`.
    pub fn new(source: &str) -> Result<Self, PatternError> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
        };
        let node = parser.alt(0)?;
        if parser.pos < parser.chars.len() {
            // Only an unmatched ')' stops the top-level alternation early.
            return err(parser.pos, "unmatched closing ')'");
        }
        let mut compiler = Compiler {
            prog: Vec::new(),
            classes: Vec::new(),
        };
        compiler.node(&node)?;
        compiler.push(Inst::Match)?;
        Ok(Self {
            source: source.to_owned(),
            prog: compiler.prog,
            classes: compiler.classes,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches all of `text`.
    pub fn is_match(&self, text: &str) -> bool {
        thread_local! {
            static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
        }
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut b) => self.run(&mut b, text),
            Err(_) => self.run(&mut Buffers::default(), text),
        })
    }

    fn run(&self, buffers: &mut Buffers, text: &str) -> bool {
        let len = text.chars().count();
        let n = self.prog.len();
        let Buffers {
            clist,
            nlist,
            stack,
        } = buffers;
        clist.reset(n);
        nlist.reset(n);
        stack.clear();
        self.add(clist, stack, 0, 0, len);
        for (i, c) in text.chars().enumerate() {
            if clist.dense.is_empty() {
                return false;
            }
            nlist.clear();
            for k in 0..clist.dense.len() {
                let pc = clist.dense[k];
                let step = match self.prog[pc as usize] {
                    Inst::Char(x) => x == c,
                    Inst::Any => !is_line_terminator(c),
                    Inst::Class(idx) => self.classes[idx as usize].matches(c),
                    _ => false,
                };
                if step {
                    self.add(nlist, stack, pc + 1, i + 1, len);
                }
            }
            std::mem::swap(clist, nlist);
        }
        clist
            .dense
            .iter()
            .any(|&pc| matches!(self.prog[pc as usize], Inst::Match))
    }

    /// Adds `pc` and everything reachable from it without consuming input.
    fn add(&self, list: &mut SparseSet, stack: &mut Vec<u32>, pc: u32, pos: usize, len: usize) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            if list.contains(pc) {
                continue;
            }
            list.insert(pc);
            match self.prog[pc as usize] {
                Inst::Jmp(t) => stack.push(t),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Start if pos == 0 => stack.push(pc + 1),
                Inst::End if pos == len => stack.push(pc + 1),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).expect("pattern compiles").is_match(s)
    }

    #[test]
    fn whole_value_match() {
        assert!(m("t2.*", "t2.small"));
        assert!(!m("t2", "t2.small"));
        assert!(m("g2\\..*", "g2.2xlarge"));
        assert!(!m("g2\\..*", "g2x2xlarge"));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("us-east-1[abc]", "us-east-1b"));
        assert!(!m("us-east-1[abc]", "us-east-1d"));
        assert!(m("[^a-c]x", "dx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("\\d+\\.\\d+", "10.25"));
        assert!(!m("\\d+", "1a"));
        assert!(m("[\\w-]+", "i-abc_12"));
        assert!(m("[\\D]", "x"));
        assert!(!m("[\\D]", "7"));
        assert!(m("a[-x]b", "a-b"));
        assert!(m("a[x-]b", "a-b"));
        assert!(m("\\Qa.b\\E", "a.b"));
        assert!(m("\\Qab\\E{3}", "abbb"));
        assert!(!m("\\Qab\\E{3}", "ababab"));
        assert!(m("x\\Q\\Ey", "xy"));
        assert!(Pattern::new("\\Q\\E*").is_err());
        assert!(!m("\\Qa.b\\E", "axb"));
        assert!(m("\\x41\\u0042", "AB"));
        assert!(m("[]a]", "]"));
    }

    #[test]
    fn groups_alternation_repetition() {
        assert!(m("(m5|c5)\\.(x|2x)?large", "c5.2xlarge"));
        assert!(m("(m5|c5)\\.(x|2x)?large", "m5.large"));
        assert!(!m("(m5|c5)\\.(x|2x)?large", "t3.large"));
        assert!(m("(?:ab){2,3}", "ababab"));
        assert!(!m("(?:ab){2,3}", "ab"));
        assert!(!m("(?:ab){2,3}", "abababab"));
        assert!(m("a{3}", "aaa"));
        assert!(m("a{2,}", "aaaaa"));
        assert!(m("a*?b", "aab"));
        assert!(m("^abc$", "abc"));
        assert!(!m("a^b", "ab"));
        assert!(m("(a*)*", "aaaa"));
        assert!(m("(a|)*b", "aab"));
    }

    #[test]
    fn no_catastrophic_backtracking() {
        let p = Pattern::new("(a*)*(a*)*(a*)*b").expect("compiles");
        let text = "a".repeat(5000);
        assert!(!p.is_match(&text));
    }

    #[test]
    fn errors_have_offsets() {
        let e = Pattern::new("ab(c").expect_err("unclosed");
        assert_eq!(e.offset, 2);
        let e = Pattern::new("*a").expect_err("dangling");
        assert_eq!(e.offset, 0);
        let e = Pattern::new("a)").expect_err("unmatched");
        assert_eq!(e.offset, 1);
        let e = Pattern::new("x\\1").expect_err("backref");
        assert_eq!(e.offset, 1);
        assert!(Pattern::new("a++").is_err());
        assert!(Pattern::new("a**").is_err());
        assert!(Pattern::new("(?=a)").is_err());
        assert!(Pattern::new("[a-").is_err());
        assert!(Pattern::new("[z-a]").is_err());
        assert!(Pattern::new("a{3,2}").is_err());
        assert!(Pattern::new("a{1001}").is_err());
        assert!(Pattern::new("(a{1000}){1000}").is_err());
        assert!(Pattern::new(&"(".repeat(200)).is_err());
        assert!(Pattern::new("\\").is_err());
        assert!(Pattern::new("^*").is_err());
    }
}
