//! `--test-hooks` (never in production): two routes the binary's tests use to see what a stuck
//! or a panicking worker leaves behind. `POST /debug/stall?ms=N` blocks the worker's thread for
//! N ms (at most a minute), as a core stuck in a long computation would; `POST /debug/panic`
//! panics it. Part of the binary, not of the library: `Hooked` wraps the gateway's service.

use wsgate::proto::http;
use wsgate::runtime::Service;

/// A service with the test routes in front of `S`'s.
pub struct Hooked<S>(pub S);

impl<S: Service> Service for Hooked<S> {
    type Handler = S::Handler;

    fn handler(&self) -> Self::Handler {
        self.0.handler()
    }

    fn answer(&self, method: &str, target: &str, out: &mut Vec<u8>) -> bool {
        let (path, query) = http::split_target(target);
        match path {
            "/debug/stall" => {
                let ms = query
                    .unwrap_or("")
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("ms="))
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .unwrap_or(0)
                    .min(60_000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                http::write_response(out, 200, &[], b"OK");
                true
            }
            "/debug/panic" => panic!("--test-hooks: /debug/panic"),
            _ => self.0.answer(method, target, out),
        }
    }
}
