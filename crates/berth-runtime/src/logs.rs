//! Container output as Docker's `json-file` log lines:
//! `{"log":"hello\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}`.
//!
//! Docker's rules: one entry per line (the newline stays in `log`), lines longer than
//! [`MAX_LINE`] are cut into entries without a trailing newline, and an unterminated last line is
//! written as it is when the stream ends. Bytes that are not UTF-8 become U+FFFD.

use std::io::{self, Write};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Longest line kept in one entry (Docker's `bufio` buffer size in its log copier).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot write the container log")]
    Write(#[source] io::Error),
    #[error("cannot encode a log entry")]
    Encode(#[source] serde_json::Error),
    #[error("cannot format a log timestamp")]
    Time(#[source] time::error::Format),
}

/// Which output of the container a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// Formats a time like Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction dropped).
pub fn rfc3339_nano(t: OffsetDateTime) -> Result<String, LogError> {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(LogError::Time)
}

/// Turns chunks of stdout/stderr into json-file entries written to `out`.
///
/// Each call to [`JsonLogWriter::write`] issues at most one `write_all` on `out`, so entries from
/// one read stay together in the file.
pub struct JsonLogWriter<W: Write> {
    out: W,
    partial: [Vec<u8>; 2],
    buf: Vec<u8>,
}

impl<W: Write> JsonLogWriter<W> {
    pub fn new(out: W) -> Self {
        JsonLogWriter {
            out,
            partial: [Vec::new(), Vec::new()],
            buf: Vec::new(),
        }
    }

    /// Adds `data` read from `stream` at time `now`; complete lines are written, the rest waits.
    pub fn write(
        &mut self,
        stream: Stream,
        data: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), LogError> {
        let time = rfc3339_nano(now)?;
        let mut pending = std::mem::take(&mut self.partial[stream.index()]);
        let mut rest = data;
        while !rest.is_empty() {
            let room = MAX_LINE - pending.len();
            let window = &rest[..rest.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    pending.extend_from_slice(&window[..=i]);
                    rest = &rest[i + 1..];
                    self.encode(stream, &pending, &time)?;
                    pending.clear();
                }
                None if pending.len() + window.len() == MAX_LINE => {
                    pending.extend_from_slice(window);
                    rest = &rest[window.len()..];
                    self.encode(stream, &pending, &time)?;
                    pending.clear();
                }
                None => {
                    pending.extend_from_slice(window);
                    rest = &[];
                }
            }
        }
        self.partial[stream.index()] = pending;
        self.flush_buf()
    }

    /// Writes what is left of an unterminated line of `stream` (at its end).
    pub fn finish(&mut self, stream: Stream, now: OffsetDateTime) -> Result<(), LogError> {
        let pending = std::mem::take(&mut self.partial[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        let time = rfc3339_nano(now)?;
        self.encode(stream, &pending, &time)?;
        self.flush_buf()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn encode(&mut self, stream: Stream, line: &[u8], time: &str) -> Result<(), LogError> {
        let log = String::from_utf8_lossy(line);
        let entry = Entry {
            log: &log,
            stream: stream.as_str(),
            time,
        };
        serde_json::to_writer(&mut self.buf, &entry).map_err(LogError::Encode)?;
        self.buf.push(b'\n');
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let res = self.out.write_all(&self.buf).map_err(LogError::Write);
        self.buf.clear();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_400_000).expect("valid time")
    }

    fn entries(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("json line"))
            .collect()
    }

    #[test]
    fn time_is_rfc3339_nano_utc_with_trimmed_fraction() {
        assert_eq!(
            rfc3339_nano(t0()).expect("format"),
            "2023-11-14T22:13:20.1234Z"
        );
        let whole = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid time");
        assert_eq!(rfc3339_nano(whole).expect("format"), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn lines_split_and_partial_kept_until_newline() {
        let mut w = JsonLogWriter::new(Vec::new());
        w.write(Stream::Stdout, b"one\ntw", t0()).expect("write");
        w.write(Stream::Stderr, b"err\n", t0()).expect("write");
        w.write(Stream::Stdout, b"o\nthree", t0()).expect("write");
        w.finish(Stream::Stdout, t0()).expect("finish");
        w.finish(Stream::Stderr, t0()).expect("finish");
        let e = entries(w.get_ref());
        let got: Vec<(String, String)> = e
            .iter()
            .map(|v| {
                (
                    v["log"].as_str().unwrap_or_default().to_owned(),
                    v["stream"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("one\n".to_owned(), "stdout".to_owned()),
                ("err\n".to_owned(), "stderr".to_owned()),
                ("two\n".to_owned(), "stdout".to_owned()),
                ("three".to_owned(), "stdout".to_owned()),
            ]
        );
        assert_eq!(e[0]["time"], "2023-11-14T22:13:20.1234Z");
    }

    #[test]
    fn field_order_matches_docker() {
        let mut w = JsonLogWriter::new(Vec::new());
        w.write(Stream::Stdout, b"x\"\n", t0()).expect("write");
        assert_eq!(
            String::from_utf8_lossy(w.get_ref()),
            "{\"log\":\"x\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.1234Z\"}\n"
        );
    }

    #[test]
    fn long_lines_are_cut_at_max_line() {
        let mut w = JsonLogWriter::new(Vec::new());
        let mut data = vec![b'a'; MAX_LINE * 2 + 10];
        data.push(b'\n');
        // Feed in odd-sized chunks to exercise the carry-over.
        for chunk in data.chunks(1000) {
            w.write(Stream::Stdout, chunk, t0()).expect("write");
        }
        let e = entries(w.get_ref());
        assert_eq!(e.len(), 3);
        assert_eq!(e[0]["log"].as_str().map(str::len), Some(MAX_LINE));
        assert_eq!(e[1]["log"].as_str().map(str::len), Some(MAX_LINE));
        assert_eq!(e[2]["log"].as_str(), Some("aaaaaaaaaa\n"));
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut w = JsonLogWriter::new(Vec::new());
        w.write(Stream::Stderr, b"a\xffb\n", t0()).expect("write");
        let e = entries(w.get_ref());
        assert_eq!(e[0]["log"].as_str(), Some("a\u{fffd}b\n"));
    }
}
