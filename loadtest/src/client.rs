//! One client connection: upgrade, authenticate, join, send and read frames, with the client's
//! framing. Hot loops read through [`ReadBuf`] directly; a connection can be split into a read
//! half and a write half when one task sends while another reads.

use std::io;
use std::net::{IpAddr, SocketAddr};

use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::Target;
use crate::wire;

/// The mask on every frame this client sends (RFC 6455 requires a mask, not a random one).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x99];

/// Bytes a read asks for by default.
const DEFAULT_CHUNK: usize = 4096;

pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Connects from `source` (any port) to `addr`; spreading sources lifts the ~28k
/// ephemeral-port ceiling of one source address.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    stream.writable(false).await?;
    Ok(stream)
}

const EINPROGRESS: i32 = 115;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A read buffer: bytes read from a socket and not yet consumed.
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    chunk: usize,
}

impl Default for ReadBuf {
    fn default() -> Self {
        Self::new(DEFAULT_CHUNK)
    }
}

impl ReadBuf {
    /// A buffer whose reads ask for at least `chunk` bytes.
    pub fn new(chunk: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            chunk: chunk.max(64),
        }
    }

    /// The unconsumed bytes.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` pending bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }

    /// Reads once more from `r` (the unconsumed tail moves to the front first); EOF is an error.
    pub async fn fill<R: AsyncReadRent>(&mut self, r: &mut R) -> io::Result<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.reserve(self.chunk);
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = r.read(monoio::buf::IoBufMut::slice_mut(buf, len..)).await;
        self.buf = slice.into_inner();
        match res? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// The next complete server frame already buffered, consumed: (opcode, payload).
    /// Fragmented messages are not expected from wsgate (docs/protocol.md §6) and are an error.
    pub fn frame(&mut self) -> io::Result<Option<(u8, &[u8])>> {
        let Some(frame) = wire::decode_server(self.pending()).map_err(err)? else {
            return Ok(None);
        };
        if !frame.fin || frame.opcode == 0 {
            return Err(err("server sent a fragmented message"));
        }
        let begin = self.start + frame.payload_start;
        let end = self.start + frame.len;
        self.start = end;
        Ok(Some((frame.opcode, &self.buf[begin..end])))
    }

    /// The next server frame, reading from `r` as needed (payload copied).
    pub async fn next_frame<R: AsyncReadRent>(&mut self, r: &mut R) -> io::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload)) = self.frame()? {
                return Ok((opcode, payload.to_vec()));
            }
            self.fill(r).await?;
        }
    }

    /// Reads until the server's Close frame (answering nothing else); the close code, if any.
    pub async fn until_close<R: AsyncReadRent>(&mut self, r: &mut R) -> io::Result<Option<u16>> {
        loop {
            let (opcode, payload) = self.next_frame(r).await?;
            if opcode == 0x8 {
                return Ok(close_code(&payload));
            }
        }
    }
}

/// The status code of a Close frame payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Appends one masked client frame to `out`.
pub fn frame_into(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    wire::encode_client(out, opcode, payload, MASK);
}

/// Writes all of `bytes` to `w` and hands the buffer back for reuse.
pub async fn write_all<W: AsyncWriteRent>(w: &mut W, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
    let (res, bytes) = w.write_all(bytes).await;
    res.map(|_| bytes)
}

/// An open WebSocket client connection with its read buffer.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub rb: ReadBuf,
}

/// The read half of a split connection, with the read buffer.
pub struct Reader {
    /// The socket's read half.
    pub half: OwnedReadHalf<TcpStream>,
    /// Bytes read and not yet consumed.
    pub rb: ReadBuf,
}

/// The write half of a split connection.
pub type Writer = OwnedWriteHalf<TcpStream>;

impl Conn {
    /// Upgrades `stream` and authenticates with `token` in the first frame.
    pub async fn open(
        stream: TcpStream,
        target: &Target,
        origin: &str,
        token: &str,
    ) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            rb: ReadBuf::default(),
        };
        let req = wire::upgrade_request(&target.host, &target.path, Some(origin));
        conn.write(req).await?;
        let head_len = loop {
            if let Some(end) = wire::head_end(conn.rb.pending()) {
                break end;
            }
            conn.rb.fill(&mut conn.stream).await?;
        };
        let head = &conn.rb.pending()[..head_len];
        if !head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&head[..head_len.min(64)]).into_owned();
            return Err(err(format!("upgrade refused: {line}")));
        }
        conn.rb.consume(head_len);
        let cmd = serde_json::json!({"action": "authenticate", "token": token}).to_string();
        conn.send(0x1, cmd.as_bytes()).await?;
        let (opcode, payload) = conn.next_frame().await?;
        if opcode != 0x1 || !contains(&payload, br#""status_code":200"#) {
            return Err(err(format!(
                "authentication failed: {}",
                String::from_utf8_lossy(&payload)
            )));
        }
        Ok(conn)
    }

    /// Joins `group` and waits for `joined`; an `error` answer is an error.
    pub async fn join(&mut self, group: &str) -> io::Result<()> {
        let cmd = serde_json::json!({"action": "join", "group": group}).to_string();
        self.send(0x1, cmd.as_bytes()).await?;
        loop {
            let (opcode, payload) = self.next_frame().await?;
            match opcode {
                0x1 if contains(&payload, br#""action":"joined""#) => return Ok(()),
                0x9 => self.send(0xa, &payload).await?,
                0xa => {}
                _ => {
                    return Err(err(format!(
                        "join {group}: {}",
                        String::from_utf8_lossy(&payload)
                    )));
                }
            }
        }
    }

    /// Sets how many bytes each read asks for at least.
    pub fn set_read_chunk(&mut self, chunk: usize) {
        self.rb.chunk = chunk.max(64);
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame_into(&mut frame, opcode, payload);
        self.write(frame).await
    }

    /// Writes raw bytes (whole frames).
    pub async fn write(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        write_all(&mut self.stream, bytes).await.map(|_| ())
    }

    /// Reads once more into the read buffer.
    pub async fn fill(&mut self) -> io::Result<()> {
        self.rb.fill(&mut self.stream).await
    }

    /// The next complete server frame: (opcode, payload).
    pub async fn next_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        self.rb.next_frame(&mut self.stream).await
    }

    /// Sends a Close and waits for the server's.
    pub async fn close(mut self) -> io::Result<()> {
        self.send(0x8, &1000u16.to_be_bytes()).await?;
        self.rb.until_close(&mut self.stream).await.map(|_| ())
    }

    /// Splits into a read half (keeping what is buffered) and a write half.
    pub fn into_split(self) -> (Reader, Writer) {
        let (half, writer) = self.stream.into_split();
        (Reader { half, rb: self.rb }, writer)
    }
}

impl Reader {
    /// Reads once more into the read buffer.
    pub async fn fill(&mut self) -> io::Result<()> {
        self.rb.fill(&mut self.half).await
    }
}

/// Sends a Close on `writer` and waits for the server's on `reader`.
pub async fn close_split(reader: &mut Reader, writer: &mut Writer) -> io::Result<()> {
    let mut frame = Vec::with_capacity(8);
    frame_into(&mut frame, 0x8, &1000u16.to_be_bytes());
    write_all(writer, frame).await?;
    reader.rb.until_close(&mut reader.half).await.map(|_| ())
}

/// Connects (from `source`), upgrades and authenticates as `user` with a token allowing
/// `groups`, then joins `join` if given.
pub async fn open_as(
    target: &Target,
    origin: &str,
    secret: &str,
    source: Option<IpAddr>,
    user: &str,
    groups: &[&str],
    join: Option<&str>,
) -> io::Result<Conn> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = crate::token::mint(secret.as_bytes(), user, now, 3600, groups);
    let stream = connect(target.addr, source).await?;
    let mut conn = Conn::open(stream, target, origin, &token).await?;
    if let Some(group) = join {
        conn.join(group).await?;
    }
    Ok(conn)
}

/// Handles every frame already buffered in `rb`: text payloads go to `on_text`, Ping payloads
/// are collected in `pongs` (to answer), Pongs are ignored; a Close or a binary frame is an
/// error.
pub fn drain_frames(
    rb: &mut ReadBuf,
    pongs: &mut Vec<Vec<u8>>,
    mut on_text: impl FnMut(&[u8]),
) -> io::Result<()> {
    while let Some((opcode, payload)) = rb.frame()? {
        match opcode {
            0x1 => on_text(payload),
            0x9 => pongs.push(payload.to_vec()),
            0xa => {}
            0x8 => {
                let code = close_code(payload).map_or("none".to_owned(), |c| c.to_string());
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                return Err(err(format!(
                    "server closed the connection: {code} {reason}"
                )));
            }
            op => return Err(err(format!("unexpected opcode {op:#x}"))),
        }
    }
    Ok(())
}

/// Answers the collected Pings on `w`.
pub async fn answer_pings<W: AsyncWriteRent>(
    w: &mut W,
    pongs: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    if pongs.is_empty() {
        return Ok(());
    }
    let mut out = Vec::new();
    for p in pongs.drain(..) {
        frame_into(&mut out, 0xa, &p);
    }
    write_all(w, out).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(bytes: &[u8]) -> ReadBuf {
        let mut rb = ReadBuf::default();
        rb.buf.extend_from_slice(bytes);
        rb
    }

    #[test]
    fn drain_hands_over_texts_and_collects_pings_until_a_close() {
        let mut wire = vec![0x81, 2, b'h', b'i', 0x89, 1, b'p', 0x8a, 0, 0x81, 1, b'!'];
        let mut rb = buffered(&wire);
        let (mut texts, mut pongs) = (Vec::new(), Vec::new());
        drain_frames(&mut rb, &mut pongs, |t| texts.push(t.to_vec())).unwrap();
        assert_eq!(texts, [b"hi".to_vec(), b"!".to_vec()]);
        assert_eq!(pongs, [b"p".to_vec()]);
        assert!(rb.pending().is_empty());
        // A partial frame stays buffered; a Close is an error naming its code.
        wire = vec![
            0x81, 1, b'a', 0x88, 4, 0x03, 0xf0, b'x', b'y', 0x81, 5, b'p',
        ];
        let mut rb = buffered(&wire);
        texts.clear();
        let e = drain_frames(&mut rb, &mut pongs, |t| texts.push(t.to_vec())).unwrap_err();
        assert!(e.to_string().contains("1008 xy"), "{e}");
        assert_eq!(texts, [b"a".to_vec()]);
        let mut rb = buffered(&[0x81, 5, b'p']);
        drain_frames(&mut rb, &mut pongs, |_| panic!("incomplete")).unwrap();
        assert_eq!(rb.pending().len(), 3);
    }

    #[test]
    fn fragments_and_binary_frames_are_errors() {
        let mut pongs = Vec::new();
        assert!(drain_frames(&mut buffered(&[0x01, 1, b'a']), &mut pongs, |_| {}).is_err());
        assert!(drain_frames(&mut buffered(&[0x82, 1, 0]), &mut pongs, |_| {}).is_err());
    }
}
