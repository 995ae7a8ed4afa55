//! The small part of the DNS wire format (RFC 1035) the embedded server needs: parse a query's
//! header and question, build responses. Every read is bounds-checked; hostile input gives an
//! error, never a panic.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;

const HEADER_LEN: usize = 12;
const MAX_NAME_LEN: usize = 255;
const MAX_POINTERS: usize = 32;

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet shorter than a DNS header")]
    NoHeader,
    #[error("truncated packet")]
    Truncated,
    #[error("bad name")]
    BadName,
    #[error("not exactly one question")]
    QuestionCount,
    #[error("not a query")]
    NotQuery,
}

/// A parsed query: its header fields and its single question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// Labels as sent (case preserved, for the echoed question).
    pub labels: Vec<Vec<u8>>,
    pub qtype: u16,
    pub qclass: u16,
}

impl Query {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    /// The name, lowercased, dot-separated, without the trailing dot.
    pub fn name(&self) -> String {
        self.labels
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(".")
    }
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, WireError> {
    match (buf.get(at), buf.get(at + 1)) {
        (Some(a), Some(b)) => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(WireError::Truncated),
    }
}

/// Reads a (possibly compressed) name at `at`; returns its labels and the offset after it.
pub fn read_name(buf: &[u8], mut at: usize) -> Result<(Vec<Vec<u8>>, usize), WireError> {
    let mut labels = Vec::new();
    let mut total = 0usize;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *buf.get(at).ok_or(WireError::Truncated)? as usize;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok((labels, end.unwrap_or(at + 1)));
                }
                let label = buf.get(at + 1..at + 1 + len).ok_or(WireError::Truncated)?;
                total += len + 1;
                if total > MAX_NAME_LEN {
                    return Err(WireError::BadName);
                }
                labels.push(label.to_vec());
                at += 1 + len;
            }
            0xc0 => {
                let lo = *buf.get(at + 1).ok_or(WireError::Truncated)? as usize;
                jumps += 1;
                if jumps > MAX_POINTERS {
                    return Err(WireError::BadName);
                }
                if end.is_none() {
                    end = Some(at + 2);
                }
                at = ((len & 0x3f) << 8) | lo;
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// The query id of anything at least two bytes long.
pub fn peek_id(buf: &[u8]) -> Option<u16> {
    u16_at(buf, 0).ok()
}

/// Parses a query with exactly one question.
pub fn parse_query(buf: &[u8]) -> Result<Query, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::NoHeader);
    }
    let id = u16_at(buf, 0)?;
    let flags = u16_at(buf, 2)?;
    if flags & 0x8000 != 0 {
        return Err(WireError::NotQuery);
    }
    if u16_at(buf, 4)? != 1 {
        return Err(WireError::QuestionCount);
    }
    let (labels, at) = read_name(buf, HEADER_LEN)?;
    let qtype = u16_at(buf, at)?;
    let qclass = u16_at(buf, at + 2)?;
    Ok(Query {
        id,
        flags,
        labels,
        qtype,
        qclass,
    })
}

fn push_name(out: &mut Vec<u8>, labels: &[Vec<u8>]) {
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    A(Ipv4Addr),
    /// PTR target name, dot-separated.
    Ptr(String),
}

/// A response to `q` with `rcode` and `answers` (owner name: the question's), TTL `ttl`.
pub fn response(q: &Query, rcode: u8, answers: &[Answer], ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + answers.len() * 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, opcode copied, AA=0, TC=0, RD copied, RA=1, rcode
    let flags: u16 =
        0x8000 | (q.flags & 0x7800) | (q.flags & 0x0100) | 0x0080 | u16::from(rcode & 0xf);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    push_name(&mut out, &q.labels);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    for a in answers {
        out.extend_from_slice(&[0xc0, 0x0c]); // pointer to the question name
        match a {
            Answer::A(ip) => {
                out.extend_from_slice(&TYPE_A.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&ip.octets());
            }
            Answer::Ptr(name) => {
                let labels: Vec<Vec<u8>> = name
                    .split('.')
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_bytes().iter().take(63).copied().collect())
                    .collect();
                let mut rdata = Vec::new();
                push_name(&mut rdata, &labels);
                out.extend_from_slice(&TYPE_PTR.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                out.extend_from_slice(&rdata);
            }
        }
    }
    out
}

/// A bare error response echoing only the header of `buf` (for packets whose question cannot
/// be parsed). `None` if `buf` has no header or is itself a response.
pub fn error_from_header(buf: &[u8], rcode: u8) -> Option<Vec<u8>> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let id = u16_at(buf, 0).ok()?;
    let flags = u16_at(buf, 2).ok()?;
    if flags & 0x8000 != 0 {
        return None;
    }
    let flags: u16 = 0x8000 | (flags & 0x7900) | 0x0080 | u16::from(rcode & 0xf);
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// The rcode of a response.
pub fn rcode(buf: &[u8]) -> Option<u8> {
    buf.get(3).map(|b| b & 0xf)
}

/// Reads the A records of a response (for tests and clients): (rcode, addresses).
pub fn parse_a_answers(buf: &[u8]) -> Result<(u8, Vec<Ipv4Addr>), WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::NoHeader);
    }
    let rc = (u16_at(buf, 2)? & 0xf) as u8;
    let qd = u16_at(buf, 4)?;
    let an = u16_at(buf, 6)?;
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        let (_, next) = read_name(buf, at)?;
        at = next + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (_, next) = read_name(buf, at)?;
        let ty = u16_at(buf, next)?;
        let len = u16_at(buf, next + 8)? as usize;
        let data = buf
            .get(next + 10..next + 10 + len)
            .ok_or(WireError::Truncated)?;
        if ty == TYPE_A && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at = next + 10 + len;
    }
    Ok((rc, out))
}

/// Builds a query for `name` (tests and tools).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let q = Query {
        id,
        flags: 0x0100,
        labels: name
            .trim_end_matches('.')
            .split('.')
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect(),
        qtype,
        qclass: CLASS_IN,
    };
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&q.flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    push_name(&mut out, &q.labels);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn round_trip() {
        let q = parse_query(&build_query(7, "Web.MyNet.", TYPE_A)).unwrap();
        assert_eq!(q.name(), "web.mynet");
        assert_eq!(q.id, 7);
        let r = response(
            &q,
            RCODE_NOERROR,
            &[Answer::A(Ipv4Addr::new(10, 0, 0, 2))],
            600,
        );
        assert_eq!(
            parse_a_answers(&r).unwrap(),
            (0, vec![Ipv4Addr::new(10, 0, 0, 2)])
        );
        // case preserved in the echoed question
        assert_eq!(&r[13..16], b"Web");
        let r = response(&q, RCODE_NXDOMAIN, &[], 600);
        assert_eq!(rcode(&r), Some(RCODE_NXDOMAIN));
        let r = response(&q, 0, &[Answer::Ptr("web.mynet".into())], 600);
        assert_eq!(parse_a_answers(&r).unwrap(), (0, vec![]));
    }

    #[test]
    fn compression_loops_and_bad_labels() {
        // header + name that points to itself
        let mut p = build_query(1, "a", TYPE_A)[..12].to_vec();
        p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p), Err(WireError::BadName));
        let mut p = build_query(1, "a", TYPE_A)[..12].to_vec();
        p.extend_from_slice(&[0x80, 1, 0, 1, 0, 1]);
        assert_eq!(parse_query(&p), Err(WireError::BadName));
        assert_eq!(parse_query(&[0; 5]), Err(WireError::NoHeader));
        assert!(error_from_header(&[0; 5], RCODE_FORMERR).is_none());
        let e = error_from_header(&build_query(9, "x", 1), RCODE_FORMERR).unwrap();
        assert_eq!((peek_id(&e), rcode(&e)), (Some(9), Some(RCODE_FORMERR)));
        // a too long name
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(
            parse_query(&build_query(1, &long, TYPE_A)),
            Err(WireError::BadName)
        );
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xbe27);
        let valid = build_query(0x1234, "some.container.name", TYPE_A);
        for i in 0..200_000 {
            let buf: Vec<u8> = match i % 3 {
                0 => {
                    let len = rng.gen_range(0..600);
                    (0..len).map(|_| rng.gen()).collect()
                }
                1 => valid[..rng.gen_range(0..=valid.len())].to_vec(),
                _ => {
                    let mut b = valid.clone();
                    for _ in 0..rng.gen_range(1..6) {
                        let at = rng.gen_range(0..b.len());
                        b[at] = rng.gen();
                    }
                    b
                }
            };
            if let Ok(q) = parse_query(&buf) {
                let r = response(&q, RCODE_NOERROR, &[Answer::A(Ipv4Addr::LOCALHOST)], 1);
                let _ = parse_a_answers(&r);
                let _ = q.name();
            }
            let _ = error_from_header(&buf, RCODE_SERVFAIL);
            let _ = parse_a_answers(&buf);
        }
    }
}
