pub mod close;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod mask;
pub mod message;
#[cfg(test)]
mod test_rng;
