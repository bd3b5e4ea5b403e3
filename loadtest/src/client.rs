//! One client connection: upgrade, authenticate, send and read frames, with the client's framing.

use std::io;
use std::net::{IpAddr, SocketAddr};

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::Target;
use crate::wire;

/// An open WebSocket client connection with its read buffer.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Connects from `source` (any port) to the target; spreading sources lifts the ~28k
/// ephemeral-port ceiling of one source address.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(target.addr).await;
    };
    let socket = Socket::new(
        Domain::for_address(target.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.set_nonblocking(true)?;
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_einprogress()) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    stream.writable(false).await?;
    Ok(stream)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

const fn libc_einprogress() -> i32 {
    115
}

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
            buf: Vec::with_capacity(512),
            start: 0,
        };
        let req = wire::upgrade_request(&target.host, &target.path, Some(origin));
        conn.write(req).await?;
        let head_len = loop {
            if let Some(end) = wire::head_end(&conn.buf) {
                break end;
            }
            conn.fill().await?;
        };
        if !conn.buf.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&conn.buf[..head_len.min(64)]).into_owned();
            return Err(err(format!("upgrade refused: {line}")));
        }
        conn.start = head_len;
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

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        wire::encode_client(&mut frame, opcode, payload, [0x5a, 0x17, 0xc3, 0x99]);
        self.write(frame).await
    }

    async fn write(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let (res, _) = self.stream.write_all(bytes).await;
        res.map(|_| ())
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.reserve(4096);
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self
            .stream
            .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
            .await;
        self.buf = slice.into_inner();
        match res? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    /// The next complete server frame: (opcode, payload).
    pub async fn next_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        loop {
            match wire::decode_server(&self.buf[self.start..]).map_err(err)? {
                Some(frame) => {
                    let begin = self.start + frame.payload_start;
                    let end = self.start + frame.len;
                    let payload = self.buf[begin..end].to_vec();
                    self.start = end;
                    return Ok((frame.opcode, payload));
                }
                None => self.fill().await?,
            }
        }
    }

    /// Sends a Close and waits for the server's.
    pub async fn close(mut self) -> io::Result<()> {
        self.send(0x8, &1000u16.to_be_bytes()).await?;
        loop {
            let (opcode, _) = self.next_frame().await?;
            if opcode == 0x8 {
                return Ok(());
            }
        }
    }

    /// Reads exactly the bytes the peer sends until EOF (unused data is dropped).
    #[allow(dead_code)]
    pub async fn drain(&mut self) -> io::Result<()> {
        let mut sink = vec![0u8; 1024];
        loop {
            let (res, b) = self.stream.read_exact(sink).await;
            sink = b;
            if res.is_err() {
                return Ok(());
            }
        }
    }
}
