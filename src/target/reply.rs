//! Replies read without a tree of values (issue 13: verify spent 43 % of its instructions in
//! redis-rs building a `Value` for every element of every page it read back, and a quarter of
//! the run in malloc and free). [`Replies`] holds the bytes of a batch's replies as they came
//! off the wire, in one buffer, and a flat list of nodes pointing into it; a [`Reply`] is a view
//! of one of them, compared where it lies. [`Wire`] is a plain TCP connection that reads into
//! them; TLS connections keep redis-rs, whose values are added with [`Replies::push_value`].
//!
//! The parser takes RESP2 (what kvferry speaks, SERVERS.md) and the RESP3 types a server might
//! send anyway. It resumes where the bytes ran out, so a reply of any size is parsed once.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use redis::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `+`: `a..a+b` is the text.
    Simple,
    /// `-`: `a..a+b` is the text, code and details.
    Error,
    /// `:`: `b` holds the integer's bits.
    Int,
    /// `$`: `a..a+b` is the payload.
    Bulk,
    Nil,
    /// `*`: `b` elements follow.
    Array,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    kind: Kind,
    a: usize,
    b: u64,
    /// Where its bytes start and end (the end of its last element, for an array).
    from: usize,
    to: usize,
    /// The node after its subtree.
    next: usize,
}

/// A batch's replies: their bytes, and nodes pointing into them.
#[derive(Default)]
pub struct Replies {
    data: Vec<u8>,
    /// `data[..filled]` holds bytes read; the rest is room to read into.
    filled: usize,
    /// Where parsing stands: the start of the element not parsed yet.
    pos: usize,
    nodes: Vec<Node>,
    /// Each complete reply's node, in order.
    roots: Vec<usize>,
    /// Arrays open at `pos`: their node and how many elements they still wait for.
    open: Vec<(usize, u64)>,
    /// Where the last complete reply's nodes and bytes end.
    done_nodes: usize,
    done_bytes: usize,
}

/// A reply that is not RESP.
#[derive(Debug)]
pub struct ProtocolError(String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not RESP: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn number(line: &[u8]) -> Result<i64, ProtocolError> {
    let bad = || ProtocolError(format!("{:?} is not a number", String::from_utf8_lossy(line)));
    let (neg, digits) = match line.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad());
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + u64::from(d - b'0'); // 19 digits fit
    }
    match (neg, n) {
        (false, n) if n <= i64::MAX as u64 => Ok(n as i64),
        (true, n) if n <= i64::MAX as u64 + 1 => Ok((n as i64).wrapping_neg()),
        _ => Err(bad()),
    }
}

impl Replies {
    /// How many complete replies it holds.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Reply `i`.
    pub fn get(&self, i: usize) -> Reply<'_> {
        Reply {
            r: self,
            i: self.roots[i],
        }
    }

    /// Forgets every reply, keeping the buffers for the next batch.
    pub fn clear(&mut self) {
        self.open.clear();
        self.nodes.clear();
        self.roots.clear();
        (self.filled, self.pos, self.done_nodes, self.done_bytes) = (0, 0, 0, 0);
    }

    /// Forgets a reply whose bytes stopped coming (a lost connection), and any bytes after the
    /// last complete one.
    pub fn drop_partial(&mut self) {
        self.nodes.truncate(self.done_nodes);
        self.open.clear();
        self.pos = self.done_bytes;
        self.filled = self.done_bytes;
    }

    /// Room to read into at the end of the bytes.
    fn room(&mut self) -> &mut [u8] {
        const READ: usize = 64 << 10;
        if self.data.len() - self.filled < READ / 2 {
            let len = (self.data.len() * 2).max(self.filled + READ);
            self.data.resize(len, 0);
        }
        &mut self.data[self.filled..]
    }

    /// Parses what was read until `want` replies are complete or the bytes run out.
    fn parse(&mut self, want: usize) -> Result<(), ProtocolError> {
        while self.roots.len() < want {
            let at = self.pos;
            let rest = &self.data[at..self.filled];
            let Some(cr) = memchr::memchr(b'\r', rest) else {
                return Ok(());
            };
            match rest.get(cr + 1) {
                None => return Ok(()),
                Some(b'\n') => {}
                Some(_) => return Err(ProtocolError("a line with a carriage return in it".into())),
            }
            if cr == 0 {
                return Err(ProtocolError("an empty line".into()));
            }
            let (tag, line) = (rest[0], &rest[1..cr]);
            let body = at + cr + 2;
            let mut node = Node {
                kind: Kind::Nil,
                a: at + 1,
                b: line.len() as u64,
                from: at,
                to: body,
                next: self.nodes.len() + 1,
            };
            match tag {
                b'+' => node.kind = Kind::Simple,
                b'-' => node.kind = Kind::Error,
                b':' => {
                    node.kind = Kind::Int;
                    node.b = number(line)? as u64;
                }
                // RESP3's null, boolean, double and big number, should a server send them.
                b'_' => {}
                b'#' => {
                    node.kind = Kind::Int;
                    node.b = u64::from(line == b"t");
                }
                b',' | b'(' => node.kind = Kind::Bulk,
                b'$' | b'=' | b'!' => {
                    let n = number(line)?;
                    if n >= 0 {
                        let n = n as usize;
                        if self.filled - body < n + 2 {
                            return Ok(()); // the payload is not all here yet
                        }
                        if &self.data[body + n..body + n + 2] != b"\r\n" {
                            return Err(ProtocolError(format!("a bulk string of {n} bytes does not end there")));
                        }
                        node.kind = if tag == b'!' { Kind::Error } else { Kind::Bulk };
                        (node.a, node.b, node.to) = (body, n as u64, body + n + 2);
                        if tag == b'=' && n >= 4 {
                            node.a += 4; // a verbatim string's "txt:"
                            node.b -= 4;
                        }
                    } else if n != -1 {
                        return Err(ProtocolError(format!("a bulk string of {n} bytes")));
                    }
                }
                b'*' | b'~' | b'>' | b'%' => {
                    let n = number(line)?;
                    if n >= 0 {
                        node.kind = Kind::Array;
                        node.b = n as u64 * if tag == b'%' { 2 } else { 1 };
                    } else if n != -1 {
                        return Err(ProtocolError(format!("an array of {n} elements")));
                    }
                }
                t => {
                    return Err(ProtocolError(format!(
                        "a reply starting with {:?}",
                        char::from(t).escape_default().to_string()
                    )))
                }
            }
            self.pos = node.to;
            let i = self.nodes.len();
            self.nodes.push(node);
            if node.kind == Kind::Array && node.b > 0 {
                self.open.push((i, node.b));
                continue;
            }
            // An element is complete: so may be the arrays it ends.
            loop {
                let Some((arr, left)) = self.open.last_mut() else {
                    // A whole reply.
                    let root = self.done_nodes;
                    self.roots.push(root);
                    (self.done_nodes, self.done_bytes) = (self.nodes.len(), self.pos);
                    break;
                };
                *left -= 1;
                if *left > 0 {
                    break;
                }
                let arr = *arr;
                self.open.pop();
                (self.nodes[arr].next, self.nodes[arr].to) = (self.nodes.len(), self.pos);
            }
        }
        Ok(())
    }

    /// Reads from `from` until it holds `want` replies.
    fn read_from(&mut self, from: &mut impl Read, want: usize) -> Result<(), WireError> {
        self.parse(want).map_err(WireError::Protocol)?;
        while self.roots.len() < want {
            let n = match from.read(self.room()) {
                Ok(0) => return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WireError::Io(e)),
            };
            self.filled += n;
            self.parse(want).map_err(WireError::Protocol)?;
        }
        Ok(())
    }

    /// Adds a reply that redis-rs read (a TLS connection, a redirect followed).
    pub fn push_value(&mut self, v: &Value) {
        self.drop_partial();
        let mut b = Vec::new();
        encode(v, &mut b);
        let want = self.roots.len() + 1;
        self.room();
        if self.data.len() < self.filled + b.len() {
            self.data.resize(self.filled + b.len(), 0);
        }
        self.data[self.filled..self.filled + b.len()].copy_from_slice(&b);
        self.filled += b.len();
        self.parse(want).expect("BUG: a value encoded as RESP parses");
        debug_assert_eq!(self.roots.len(), want);
    }

    /// Puts reply `with_last` (the last one) in the place of reply `i`.
    pub fn replace_with_last(&mut self, i: usize) {
        let last = self.roots.pop().expect("BUG: a reply to move");
        self.roots[i] = last;
    }

    /// The replies of RESP bytes (tests).
    /// The replies `b` holds, the whole of it (a command read from a file: follow's binlog
    /// items).
    pub fn parse_whole(b: &[u8]) -> Result<Replies, ProtocolError> {
        let mut r = Replies {
            data: b.to_vec(),
            filled: b.len(),
            ..Replies::default()
        };
        r.parse(usize::MAX)?;
        if r.done_bytes != b.len() {
            return Err(ProtocolError(format!(
                "its last {} of {} bytes are not a whole reply",
                b.len() - r.done_bytes,
                b.len()
            )));
        }
        Ok(r)
    }

    #[cfg(test)]
    pub fn parse_bytes(b: &[u8]) -> Replies {
        let mut r = Replies::default();
        r.read_from(&mut &b[..], usize::MAX)
            .or_else(|e| match e {
                WireError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
                e => Err(e),
            })
            .expect("RESP");
        r
    }

    /// The replies of redis-rs values (tests).
    #[cfg(test)]
    pub fn of_values(vs: &[Value]) -> Replies {
        let mut r = Replies::default();
        for v in vs {
            r.push_value(v);
        }
        r
    }
}

/// Writes `v` as RESP2 (RESP3 types as the nearest RESP2 one).
fn encode(v: &Value, out: &mut Vec<u8>) {
    let line = |out: &mut Vec<u8>, tag: u8, text: &[u8]| {
        out.push(tag);
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    };
    let bulk = |out: &mut Vec<u8>, b: &[u8]| {
        line(out, b'$', b.len().to_string().as_bytes());
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    };
    match v {
        Value::Nil => line(out, b'$', b"-1"),
        Value::Int(n) => line(out, b':', n.to_string().as_bytes()),
        Value::BulkString(b) => bulk(out, b),
        Value::SimpleString(s) => line(out, b'+', s.as_bytes()),
        Value::Okay => line(out, b'+', b"OK"),
        Value::Array(items) | Value::Set(items) | Value::Push { data: items, .. } => {
            line(out, b'*', items.len().to_string().as_bytes());
            for i in items {
                encode(i, out);
            }
        }
        Value::Map(pairs) => {
            line(out, b'*', (2 * pairs.len()).to_string().as_bytes());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
        Value::Attribute { data, .. } => encode(data, out),
        Value::Double(d) => bulk(out, d.to_string().as_bytes()),
        Value::Boolean(b) => line(out, b':', if *b { b"1" } else { b"0" }),
        Value::VerbatimString { text, .. } => bulk(out, text.as_bytes()),
        Value::BigNumber(n) => bulk(out, n.to_string().as_bytes()),
        Value::ServerError(e) => {
            let text = match e.details() {
                Some(d) => format!("{} {d}", e.code()),
                None => e.code().to_string(),
            };
            // An error's text is one line.
            line(out, b'-', text.replace(['\r', '\n'], " ").as_bytes());
        }
    }
}

/// One reply, or an element of one.
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    r: &'a Replies,
    i: usize,
}

impl<'a> Reply<'a> {
    fn node(&self) -> &'a Node {
        &self.r.nodes[self.i]
    }

    fn text(&self) -> &'a [u8] {
        let n = self.node();
        &self.r.data[n.a..n.a + n.b as usize]
    }

    /// An error reply's text: its code, a space, its details.
    pub fn error(self) -> Option<&'a [u8]> {
        (self.node().kind == Kind::Error).then(|| self.text())
    }

    pub fn int(self) -> Option<i64> {
        (self.node().kind == Kind::Int).then(|| self.node().b as i64)
    }

    /// A bulk or simple string's bytes.
    pub fn bytes(self) -> Option<&'a [u8]> {
        matches!(self.node().kind, Kind::Bulk | Kind::Simple).then(|| self.text())
    }

    /// A bulk string's payload (only a bulk string's).
    pub fn bulk(self) -> Option<&'a [u8]> {
        (self.node().kind == Kind::Bulk).then(|| self.text())
    }

    pub fn is_array(self) -> bool {
        self.node().kind == Kind::Array
    }

    /// An array's elements (none for anything else).
    pub fn items(self) -> Items<'a> {
        let n = self.node();
        let left = if n.kind == Kind::Array { n.b as usize } else { 0 };
        Items {
            r: self.r,
            i: self.i + 1,
            left,
        }
    }

    /// How many elements an array has (0 for anything else).
    pub fn elements(self) -> usize {
        self.items().left
    }

    /// As redis-rs reads it: for what is judged rarely (stream metadata) and for messages.
    pub fn to_value(self) -> Value {
        let n = self.node();
        redis::parse_redis_value(&self.r.data[n.from..n.to]).unwrap_or(Value::Nil)
    }
}

impl std::fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_value())
    }
}

/// An array's elements.
#[derive(Clone)]
pub struct Items<'a> {
    r: &'a Replies,
    i: usize,
    left: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Reply<'a>;

    fn next(&mut self) -> Option<Reply<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = Reply { r: self.r, i: self.i };
        self.i = self.r.nodes[self.i].next;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Items<'_> {}

/// What went wrong on a [`Wire`]: either way the connection is given up and made again.
#[derive(Debug)]
pub enum WireError {
    Io(std::io::Error),
    Protocol(ProtocolError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                write!(f, "no reply in time (--read-timeout)")
            }
            WireError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                write!(f, "the server closed the connection")
            }
            WireError::Io(e) => write!(f, "{e}"),
            WireError::Protocol(e) => write!(f, "the server's reply is {e}"),
        }
    }
}

/// A plain TCP connection whose replies are read into [`Replies`].
pub struct Wire {
    stream: TcpStream,
    /// Commands gathered for one write.
    out: Vec<u8>,
}

impl Wire {
    /// Connects as redis-rs would to `ep` (its password or token, the URL's database, or `db`),
    /// when it is a plain TCP server; `None` for TLS and Unix sockets, which keep redis-rs.
    pub fn open(
        ep: &crate::server::endpoint::Endpoint,
        db: Option<u32>,
        timeout: Duration,
    ) -> anyhow::Result<Option<Wire>> {
        let name = ep.name();
        let info = ep.connection_info()?;
        let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
            return Ok(None);
        };
        let addrs: Vec<_> = (host.as_str(), *port)
            .to_socket_addrs()
            .with_context(|| format!("{name}: cannot resolve {host}"))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(stream) = stream else {
            bail!(
                "{name}: cannot connect: {}",
                last.map_or_else(|| "no address".to_string(), |e| e.to_string())
            );
        };
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(ep.read_timeout())).ok();
        let mut wire = Wire {
            stream,
            out: Vec::new(),
        };
        let mut hello = Vec::new();
        let mut expect = Vec::new();
        if let Some(pw) = &info.redis.password {
            match &info.redis.username {
                Some(user) => super::resp::pack(&mut hello, &[b"AUTH", user.as_bytes(), pw.as_bytes()]),
                None => super::resp::pack(&mut hello, &[b"AUTH", pw.as_bytes()]),
            }
            expect.push("AUTH");
        }
        super::resp::pack(&mut hello, &[b"CLIENT", b"SETNAME", b"kvferry-import"]);
        expect.push("");
        let db = db.or((info.redis.db != 0).then_some(info.redis.db as u32));
        if let Some(db) = db {
            super::resp::pack(&mut hello, &[b"SELECT", db.to_string().as_bytes()]);
            expect.push("SELECT");
        }
        let mut r = Replies::default();
        wire.exchange(std::iter::once(hello.as_slice()), expect.len(), &mut r)
            .map_err(|e| anyhow!("{name}: {e}"))?;
        for (i, what) in expect.iter().enumerate() {
            if let (false, Some(e)) = (what.is_empty(), r.get(i).error()) {
                bail!("{name}: {what}: {}", String::from_utf8_lossy(e));
            }
        }
        Ok(Some(wire))
    }

    /// Writes `cmds` and reads `n` replies into `into`, after those it holds. On an error,
    /// `into` holds the replies that did arrive.
    pub fn exchange<'c>(
        &mut self,
        cmds: impl Iterator<Item = &'c [u8]>,
        n: usize,
        into: &mut Replies,
    ) -> Result<(), WireError> {
        into.drop_partial();
        let want = into.len() + n;
        // Small commands gathered into writes of about 64 KiB, big ones written as they are.
        const GATHER: usize = 64 << 10;
        let mut sent = Ok(());
        self.out.clear();
        for c in cmds {
            if self.out.len() + c.len() > GATHER && !self.out.is_empty() {
                sent = self.stream.write_all(&self.out);
                self.out.clear();
            }
            if sent.is_ok() && c.len() >= GATHER {
                sent = self.stream.write_all(c);
            } else if sent.is_ok() {
                self.out.extend_from_slice(c);
            }
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() && !self.out.is_empty() {
            sent = self.stream.write_all(&self.out);
        }
        // As with redis-rs: even when the write failed (the server answered an error and
        // closed), the replies it sent first can be read.
        let read = into.read_from(&mut self.stream, want);
        match (sent, read) {
            (_, Ok(())) => Ok(()),
            (Err(e), Err(_)) => Err(WireError::Io(e)),
            (Ok(()), Err(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::BulkString),
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| if s == "OK" { Value::Okay } else { Value::SimpleString(s) }),
            "[A-Z]{1,8} [a-z ]{0,12}".prop_map(|s| redis::parse_redis_value(format!("-{s}\r\n").as_bytes()).unwrap()),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            proptest::collection::vec(inner, 0..8).prop_map(Value::Array)
        })
    }

    /// What the views show, and what redis-rs's value holds, in the same terms.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Nil,
        Int(i64),
        Bytes(Vec<u8>),
        Error(Vec<u8>),
        Array(Vec<Seen>),
    }

    fn seen(r: Reply) -> Seen {
        if let Some(e) = r.error() {
            Seen::Error(e.to_vec())
        } else if let Some(n) = r.int() {
            Seen::Int(n)
        } else if let Some(b) = r.bytes() {
            Seen::Bytes(b.to_vec())
        } else if r.is_array() {
            assert_eq!(r.items().len(), r.elements());
            Seen::Array(r.items().map(seen).collect())
        } else {
            Seen::Nil
        }
    }

    fn of(v: &Value) -> Seen {
        match v {
            Value::Nil => Seen::Nil,
            Value::Int(n) => Seen::Int(*n),
            Value::BulkString(b) => Seen::Bytes(b.clone()),
            Value::SimpleString(s) => Seen::Bytes(s.as_bytes().to_vec()),
            Value::Okay => Seen::Bytes(b"OK".to_vec()),
            Value::Array(a) => Seen::Array(a.iter().map(of).collect()),
            Value::ServerError(e) => Seen::Error(
                match e.details() {
                    Some(d) => format!("{} {d}", e.code()),
                    None => e.code().to_string(),
                }
                .into_bytes(),
            ),
            other => panic!("not generated: {other:?}"),
        }
    }

    /// A reader that hands out its bytes in the given pieces.
    struct Pieces<'a>(&'a [u8], Vec<usize>);

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.pop().unwrap_or(usize::MAX).clamp(1, buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        /// Whatever the reads cut the bytes into, the replies are redis-rs's own values.
        #[test]
        fn replies_read_in_any_pieces_are_what_redis_rs_reads(
            vs in proptest::collection::vec(value(), 1..6),
            cuts in proptest::collection::vec(1usize..50, 0..40),
        ) {
            let mut bytes = Vec::new();
            for v in &vs {
                encode(v, &mut bytes);
            }
            let mut r = Replies::default();
            r.read_from(&mut Pieces(&bytes, cuts), vs.len()).unwrap();
            prop_assert_eq!(r.len(), vs.len());
            for (i, v) in vs.iter().enumerate() {
                prop_assert_eq!(&r.get(i).to_value(), v);
                prop_assert_eq!(seen(r.get(i)), of(v));
            }
        }
    }

    #[test]
    fn views_walk_nested_arrays() {
        let r = Replies::parse_bytes(b"*3\r\n*2\r\n$1\r\na\r\n:7\r\n$-1\r\n+OK\r\n:5\r\n-ERR no\r\n");
        assert_eq!(r.len(), 3);
        let top: Vec<_> = r.get(0).items().collect();
        assert_eq!(top.len(), 3);
        let inner: Vec<_> = top[0].items().collect();
        assert_eq!(inner[0].bytes(), Some(&b"a"[..]));
        assert_eq!(inner[1].int(), Some(7));
        assert!(top[1].bytes().is_none() && top[1].int().is_none() && !top[1].is_array());
        assert_eq!(top[2].bytes(), Some(&b"OK"[..]));
        assert_eq!(r.get(1).int(), Some(5));
        assert_eq!(r.get(2).error(), Some(&b"ERR no"[..]));
    }

    #[test]
    fn a_reply_that_is_not_resp_is_an_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b"$3\r\nabcde\r\n",
            b":x\r\n",
            b":9223372036854775808\r\n",
            b"*-5\r\n",
            b"\r\n",
            b"+a\rb\r\n",
        ] {
            let mut r = Replies::default();
            assert!(
                matches!(r.read_from(&mut &bad[..], 1), Err(WireError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Cut short: the connection is lost, and nothing half-read counts.
        let mut r = Replies::default();
        assert!(matches!(
            r.read_from(&mut &b":1\r\n*2\r\n:1\r\n"[..], 2),
            Err(WireError::Io(_))
        ));
        assert_eq!(r.len(), 1);
        r.drop_partial();
        r.read_from(&mut &b"$2\r\nok\r\n"[..], 2).unwrap();
        assert_eq!(r.get(1).bytes(), Some(&b"ok"[..]));
    }

    #[test]
    fn cleared_replies_start_again_and_a_reply_can_be_replaced() {
        let mut r = Replies::parse_bytes(b":1\r\n:2\r\n");
        r.clear();
        assert!(r.is_empty());
        r.read_from(&mut &b"-MOVED 1 h:1\r\n:3\r\n"[..], 2).unwrap();
        r.push_value(&Value::BulkString(b"followed".to_vec()));
        r.replace_with_last(0);
        assert_eq!(r.len(), 2);
        assert_eq!(r.get(0).bytes(), Some(&b"followed"[..]));
        assert_eq!(r.get(1).int(), Some(3));
    }
}
