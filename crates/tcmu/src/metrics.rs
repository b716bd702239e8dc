//! The runner's Prometheus endpoint: the one bounded `GET /metrics` server of
//! `rustio-metrics`, shared with `rustio serve` (request head ≤ 8 KiB, ≤ 64 headers,
//! 5 s to read and 5 s to write, 8 connections at once, 404 for other paths).

pub use rustio_metrics::{parse_listen_addr, Limits, MetricsServer, Render};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;

    #[test]
    fn serves_the_rendered_text_and_bounds_the_request_line() {
        let srv = MetricsServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| "rustio_tcmu_devices 3\n".to_string()),
        )
        .unwrap();
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nrustio_tcmu_devices 3\n"));
        // The old responder read the request line without a bound (read_line); now a
        // line longer than 8 KiB is answered 431 without waiting for its end.
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 9000));
        let _ = c.write_all(&line);
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        assert!(resp.starts_with(b"HTTP/1.1 431 "));
        let mut c = TcpStream::connect(srv.local_addr()).unwrap();
        c.write_all(b"GET /other HTTP/1.1\r\n\r\n").unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    }
}
