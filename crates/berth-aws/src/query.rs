//! The AWS query protocol (ELBv2, and in AWS also EC2/IAM/STS...): `POST /` with a form body
//! `Action=Op&Version=2015-12-01&Name=x&Subnets.member.1=a&Tags.member.1.Key=k` (or `GET /?...`),
//! an XML document out, errors as `<ErrorResponse><Error><Type/><Code/><Message/></Error>`.
//!
//! - [`Params`] parses the flattened parameters; [`Node`] reads them with typed helpers that
//!   reject malformed input with `ValidationError`;
//! - [`XmlWriter`] writes the response body with escaping;
//! - [`QueryApi`] is one service; `AwsEndpoint` dispatches form-encoded requests to the query
//!   API whose signing name is the SigV4 scope's service.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::response::Response;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::StatusCode;

use crate::json::{AwsError, RequestContext};

/// Media type of query protocol requests (a `; charset=utf-8` suffix is allowed).
pub const CONTENT_TYPE_FORM: &str = "application/x-www-form-urlencoded";
/// Media type of query protocol responses.
pub const CONTENT_TYPE_XML: &str = "text/xml";

/// The most members a list parameter may have (a guard against `X.member.99999999`).
pub const MAX_LIST_MEMBERS: usize = 1000;
/// The most parameters a request may have.
pub const MAX_PARAMS: usize = 10_000;

/// One AWS query-protocol service (ELBv2).
#[async_trait::async_trait]
pub trait QueryApi: Send + Sync {
    /// The API version clients send as `Version` (e.g. `2015-12-01`).
    fn version(&self) -> &'static str;

    /// The XML namespace of responses (e.g.
    /// `http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/`).
    fn xmlns(&self) -> &'static str;

    /// The SigV4 service name requests are scoped to (e.g. `elasticloadbalancing`).
    fn signing_name(&self) -> &'static str;

    /// Runs `action` on `params`; returns the inner XML of the `<ActionResult>` element.
    async fn call(
        &self,
        ctx: &RequestContext,
        action: &str,
        params: &Params,
    ) -> Result<String, AwsError>;
}

/// A `ValidationError` (HTTP 400), the query protocol's malformed-input error.
pub fn validation_error(message: impl Into<String>) -> AwsError {
    AwsError::client("ValidationError", message)
}

/// The code of an authentication failure as query-protocol services put it
/// (`SignatureDoesNotMatch` where JSON services say `InvalidSignatureException`).
pub fn query_error_code(code: &str) -> &str {
    match code {
        "MissingAuthenticationTokenException" => "MissingAuthenticationToken",
        "IncompleteSignatureException" => "IncompleteSignature",
        "UnrecognizedClientException" => "InvalidClientTokenId",
        "InvalidSignatureException" => "SignatureDoesNotMatch",
        "SerializationException" => "MalformedQueryString",
        other => other,
    }
}

/// The XML error response of `err`.
pub fn error_response(err: &AwsError, xmlns: &str, request_id: &str) -> Response {
    let mut w = XmlWriter::new();
    let _ = write!(w.buf, "<ErrorResponse xmlns=\"{}\">", escape(xmlns));
    w.open("Error");
    w.elem(
        "Type",
        if err.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        },
    );
    w.elem("Code", query_error_code(&err.code));
    w.elem("Message", &err.message);
    w.close("Error");
    w.elem("RequestId", request_id);
    w.close("ErrorResponse");
    xml_response(err.status, w.finish(), request_id)
}

/// The XML response of a successful `action` whose result element holds `result`.
pub fn success_response(action: &str, result: &str, xmlns: &str, request_id: &str) -> Response {
    let mut body = String::with_capacity(result.len() + 256);
    let _ = write!(
        body,
        "<{action}Response xmlns=\"{}\"><{action}Result>{result}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(xmlns),
        escape(request_id)
    );
    xml_response(StatusCode::OK, body, request_id)
}

fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_XML));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

// ---- parameters ----------------------------------------------------------------------------

/// The flattened parameters of a query request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

fn decode_component(s: &str) -> Result<String, AwsError> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| validation_error("Request parameters are not valid UTF-8"))
}

impl Params {
    /// Parses `a=b&c=d` (form encoding: `+` is a space, `%XX` escapes, UTF-8). A name given
    /// twice, an empty name, or more than [`MAX_PARAMS`] parameters is a `ValidationError`.
    pub fn parse(form: &[u8]) -> Result<Params, AwsError> {
        let text = std::str::from_utf8(form)
            .map_err(|_| validation_error("Request body is not valid UTF-8"))?;
        let mut map = BTreeMap::new();
        for pair in text.split('&') {
            if pair.is_empty() {
                continue;
            }
            if map.len() >= MAX_PARAMS {
                return Err(validation_error("Too many request parameters"));
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode_component(k)?;
            let v = decode_component(v)?;
            if k.is_empty() {
                return Err(validation_error("A request parameter has an empty name"));
            }
            if map.contains_key(&k) {
                return Err(validation_error(format!(
                    "Request parameter {k} is given more than once"
                )));
            }
            map.insert(k, v);
        }
        Ok(Params { map })
    }

    /// Parameters from `(name, value)` pairs (tests and internal callers).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Params {
        Params {
            map: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// `Action`.
    pub fn action(&self) -> Option<&str> {
        self.map.get("Action").map(String::as_str)
    }

    /// `Version`.
    pub fn version(&self) -> Option<&str> {
        self.map.get("Version").map(String::as_str)
    }

    /// The top-level structure.
    pub fn root(&self) -> Node<'_> {
        Node {
            params: self,
            prefix: String::new(),
        }
    }

    /// Every parameter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn has_prefix(&self, key: &str) -> bool {
        let dotted = format!("{key}.");
        self.map.contains_key(key)
            || self
                .map
                .range(dotted.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&dotted))
    }
}

/// A structure inside [`Params`]: member `Name` is the parameter `<prefix>.Name`.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    params: &'a Params,
    prefix: String,
}

impl<'a> Node<'a> {
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The full parameter name of member `name` (for messages).
    pub fn path(&self, name: &str) -> String {
        self.key(name)
    }

    /// Whether member `name` (a scalar, or any part of a structure/list) is present.
    pub fn has(&self, name: &str) -> bool {
        self.params.has_prefix(&self.key(name))
    }

    /// A string member.
    pub fn str(&self, name: &str) -> Option<&'a str> {
        self.params.map.get(&self.key(name)).map(String::as_str)
    }

    /// A required string member (`ValidationError` when missing).
    pub fn req_str(&self, name: &str) -> Result<&'a str, AwsError> {
        self.str(name).ok_or_else(|| {
            validation_error(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: \
                 Member must not be null",
                lower_first(&self.key(name))
            ))
        })
    }

    /// An integer member.
    pub fn int(&self, name: &str) -> Result<Option<i64>, AwsError> {
        match self.str(name) {
            None => Ok(None),
            Some(s) => s.trim().parse::<i64>().map(Some).map_err(|_| {
                validation_error(format!(
                    "Value '{s}' for {} is not an integer",
                    self.key(name)
                ))
            }),
        }
    }

    /// An integer member within `lo..=hi` (the model's range).
    pub fn int_in(&self, name: &str, lo: i64, hi: i64) -> Result<Option<i64>, AwsError> {
        match self.int(name)? {
            Some(v) if v < lo || v > hi => Err(validation_error(format!(
                "1 validation error detected: Value '{v}' at '{}' failed to satisfy constraint: \
                 Member must have value {}",
                lower_first(&self.key(name)),
                if hi == i64::MAX {
                    format!("greater than or equal to {lo}")
                } else {
                    format!("between {lo} and {hi}")
                }
            ))),
            v => Ok(v),
        }
    }

    /// A boolean member (`true`/`false`, any case).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.str(name) {
            None => Ok(None),
            Some(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(s) => Err(validation_error(format!(
                "Value '{s}' for {} is not a boolean",
                self.key(name)
            ))),
        }
    }

    /// A structure member (`None` when none of its members is present).
    pub fn child(&self, name: &str) -> Option<Node<'a>> {
        self.has(name).then(|| Node {
            params: self.params,
            prefix: self.key(name),
        })
    }

    /// A list member `Name.member.N` (N = 1, 2, ... without gaps), as nodes whose prefix is
    /// `Name.member.N`. `Name=` (how clients send an empty list) is `Some(vec![])`; an absent
    /// list is `None`.
    pub fn list(&self, name: &str) -> Result<Option<Vec<Node<'a>>>, AwsError> {
        let key = self.key(name);
        let member = format!("{key}.member.");
        let mut indexes = std::collections::BTreeSet::new();
        let mut any = false;
        if let Some(v) = self.params.map.get(&key) {
            if !v.is_empty() {
                return Err(validation_error(format!(
                    "{key} is a list: give its members as {key}.member.N"
                )));
            }
            any = true;
        }
        let dotted = format!("{key}.");
        for (k, _) in self.params.map.range(dotted.clone()..) {
            if !k.starts_with(&dotted) {
                break;
            }
            any = true;
            let Some(rest) = k.strip_prefix(&member) else {
                return Err(validation_error(format!(
                    "Parameter {k} is not a member of list {key} ({key}.member.N)"
                )));
            };
            let idx = rest.split('.').next().unwrap_or_default();
            let n: usize = match idx.parse() {
                Ok(n) if n >= 1 && !idx.starts_with('0') => n,
                _ => {
                    return Err(validation_error(format!(
                        "Parameter {k}: '{idx}' is not a list index (1, 2, ...)"
                    )))
                }
            };
            if n > MAX_LIST_MEMBERS {
                return Err(validation_error(format!(
                    "List {key} has more than {MAX_LIST_MEMBERS} members"
                )));
            }
            indexes.insert(n);
        }
        if !any {
            return Ok(None);
        }
        if let Some(&last) = indexes.iter().next_back() {
            if last != indexes.len() {
                return Err(validation_error(format!(
                    "List {key} has gaps: members must be numbered 1 to N"
                )));
            }
        }
        Ok(Some(
            (1..=indexes.len())
                .map(|n| Node {
                    params: self.params,
                    prefix: format!("{member}{n}"),
                })
                .collect(),
        ))
    }

    /// A list of strings (`Name.member.N`).
    pub fn str_list(&self, name: &str) -> Result<Option<Vec<String>>, AwsError> {
        let Some(nodes) = self.list(name)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            match n.params.map.get(&n.prefix) {
                Some(v) => out.push(v.clone()),
                None => {
                    return Err(validation_error(format!(
                        "{} must be a string, not a structure",
                        n.prefix
                    )))
                }
            }
        }
        Ok(Some(out))
    }
}

/// `Tags.member.1.Key` → `tags.member.1.key`, as AWS names members in validation messages.
fn lower_first(path: &str) -> String {
    path.split('.')
        .map(|seg| {
            let mut c = seg.chars();
            match c.next() {
                Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

// ---- XML -----------------------------------------------------------------------------------

/// `s` with `& < > " '` escaped and characters XML 1.0 cannot carry replaced by U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// An ISO 8601 timestamp with milliseconds, as query-protocol services write them
/// (`2024-05-17T09:30:15.123Z`).
pub fn iso8601(t: SystemTime) -> String {
    let nanos = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

/// A small XML writer for response bodies; every text is escaped.
#[derive(Debug, Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    pub fn new() -> XmlWriter {
        XmlWriter::default()
    }

    /// `<tag>`.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// `</tag>`.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// `<tag>text</tag>`.
    pub fn elem(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.buf.push_str(&escape(text));
        self.close(tag)
    }

    /// `<tag>value</tag>` for a number or anything `Display`.
    pub fn num(&mut self, tag: &str, v: impl std::fmt::Display) -> &mut Self {
        self.elem(tag, &v.to_string())
    }

    /// `<tag>true|false</tag>`.
    pub fn bool(&mut self, tag: &str, v: bool) -> &mut Self {
        self.elem(tag, if v { "true" } else { "false" })
    }

    /// `<tag>text</tag>` when `text` is `Some`.
    pub fn opt(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.elem(tag, t);
        }
        self
    }

    /// `<tag><member>..</member>...</tag>`, each member written by `f`.
    pub fn list<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Self, T),
    ) -> &mut Self {
        self.open(tag);
        for item in items {
            self.open("member");
            f(self, item);
            self.close("member");
        }
        self.close(tag)
    }

    /// `<tag><member>s</member>...</tag>`.
    pub fn str_list<S: AsRef<str>>(&mut self, tag: &str, items: &[S]) -> &mut Self {
        self.list(tag, items, |w, s| {
            w.buf.push_str(&escape(s.as_ref()));
        })
    }

    /// The XML written so far.
    pub fn finish(self) -> String {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Params {
        Params::parse(s.as_bytes()).expect("parse")
    }

    #[test]
    fn form_decoding() {
        let params = p("Action=CreateLoadBalancer&Version=2015-12-01&Name=a+b%2Fc&Empty=&Flag");
        assert_eq!(params.action(), Some("CreateLoadBalancer"));
        assert_eq!(params.version(), Some("2015-12-01"));
        let r = params.root();
        assert_eq!(r.str("Name"), Some("a b/c"));
        assert_eq!(r.str("Empty"), Some(""));
        assert_eq!(r.str("Flag"), Some(""));
        assert_eq!(r.str("Missing"), None);
        assert_eq!(p("A=%E2%82%AC").root().str("A"), Some("€"));
        assert!(Params::parse(b"A=%FF").is_err());
        assert!(Params::parse(b"A=1&A=2").is_err());
        assert!(Params::parse(b"=1").is_err());
        assert!(Params::parse(b"&&A=1&").is_ok());
        assert!(Params::parse(&[0xff]).is_err());
    }

    #[test]
    fn scalars() {
        let params = p("I=42&Neg=-3&Bad=4x&T=true&F=FALSE&B=yes");
        let r = params.root();
        assert_eq!(r.int("I").expect("int"), Some(42));
        assert_eq!(r.int("Neg").expect("int"), Some(-3));
        assert_eq!(r.int("Nope").expect("int"), None);
        assert_eq!(r.int("Bad").expect_err("bad").code, "ValidationError");
        assert_eq!(
            r.int_in("I", 1, 10).expect_err("range").code,
            "ValidationError"
        );
        assert_eq!(r.int_in("I", 1, 100).expect("in range"), Some(42));
        assert_eq!(r.bool("T").expect("bool"), Some(true));
        assert_eq!(r.bool("F").expect("bool"), Some(false));
        assert!(r.bool("B").is_err());
        let e = r.req_str("Name").expect_err("required");
        assert!(e.message.contains("'name'"), "{}", e.message);
    }

    #[test]
    fn lists_and_structures() {
        let params = p("Subnets.member.1=a&Subnets.member.2=b\
             &Tags.member.1.Key=k1&Tags.member.1.Value=v1&Tags.member.2.Key=k2\
             &Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight=5\
             &Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn=arn\
             &Conditions.member.1.PathPatternConfig.Values.member.1=/a*\
             &Empty=");
        let r = params.root();
        assert_eq!(
            r.str_list("Subnets").expect("list"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(r.str_list("None").expect("absent"), None);
        assert_eq!(r.str_list("Empty").expect("empty"), Some(vec![]));
        let tags = r.list("Tags").expect("tags").expect("some");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].str("Key"), Some("k1"));
        assert_eq!(tags[0].str("Value"), Some("v1"));
        assert_eq!(tags[1].str("Value"), None);
        let actions = r.list("Actions").expect("actions").expect("some");
        let fc = actions[0].child("ForwardConfig").expect("forward config");
        let tgs = fc.list("TargetGroups").expect("tgs").expect("some");
        assert_eq!(tgs[0].int("Weight").expect("w"), Some(5));
        assert_eq!(tgs[0].str("TargetGroupArn"), Some("arn"));
        assert!(actions[0].child("RedirectConfig").is_none());
        let conds = r.list("Conditions").expect("c").expect("some");
        let ppc = conds[0].child("PathPatternConfig").expect("ppc");
        assert_eq!(
            ppc.str_list("Values").expect("v"),
            Some(vec!["/a*".to_string()])
        );
        assert_eq!(
            ppc.path("Values"),
            "Conditions.member.1.PathPatternConfig.Values"
        );
    }

    #[test]
    fn malformed_lists() {
        for bad in [
            "L.member.2=a",
            "L.member.1=a&L.member.3=b",
            "L.member.0=a",
            "L.member.01=a",
            "L.member.x=a",
            "L.member.1001=a",
            "L.item.1=a",
            "L=x",
            "L.member.1.K=v",
        ] {
            let params = p(bad);
            let r = params.root();
            let e = r.str_list("L").expect_err(bad);
            assert_eq!(e.code, "ValidationError", "{bad}");
        }
        assert!(p("L.member.1.K=v").root().list("L").is_ok());
    }

    #[test]
    fn xml_writer_escapes() {
        let mut w = XmlWriter::new();
        w.open("R")
            .elem("A", "<a & 'b' \"c\">")
            .num("N", 5)
            .bool("B", true)
            .opt("O", None)
            .str_list("L", &["x<", "y"])
            .list("S", [1, 2], |w, i| {
                w.num("I", i);
            })
            .elem("C", "a\u{1}b\rc")
            .close("R");
        assert_eq!(
            w.finish(),
            "<R><A>&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;</A><N>5</N><B>true</B>\
             <L><member>x&lt;</member><member>y</member></L>\
             <S><member><I>1</I></member><member><I>2</I></member></S>\
             <C>a\u{FFFD}b&#13;c</C></R>"
        );
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_715_938_215_123);
        assert_eq!(iso8601(t), "2024-05-17T09:30:15.123Z");
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[tokio::test]
    async fn error_and_success_documents() {
        use http_body_util::BodyExt;
        let err = AwsError::client("LoadBalancerNotFound", "no <such> lb");
        let r = error_response(&err, "http://x/", "req-1");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/xml");
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).expect("utf8"),
            "<ErrorResponse xmlns=\"http://x/\"><Error><Type>Sender</Type>\
             <Code>LoadBalancerNotFound</Code><Message>no &lt;such&gt; lb</Message></Error>\
             <RequestId>req-1</RequestId></ErrorResponse>"
        );
        let auth = AwsError::new(StatusCode::FORBIDDEN, "InvalidSignatureException", "bad");
        let r = error_response(&auth, "http://x/", "req-2");
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert!(std::str::from_utf8(&body)
            .expect("utf8")
            .contains("<Code>SignatureDoesNotMatch</Code>"));
        let r = success_response("DeleteRule", "", "http://x/", "req-3");
        let body = r.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            std::str::from_utf8(&body).expect("utf8"),
            "<DeleteRuleResponse xmlns=\"http://x/\"><DeleteRuleResult></DeleteRuleResult>\
             <ResponseMetadata><RequestId>req-3</RequestId></ResponseMetadata></DeleteRuleResponse>"
        );
    }
}
