//! Human-readable sizes, with targetcli's syntax (`1G`, `512M`, `4k`, `10MB`, `1GiB`).

use crate::error::{Error, Result};

/// Parses a size like targetcli's `human_to_bytes`: a number with an optional
/// `k`/`m`/`g`/`t` unit (powers of 1024), an optional `B`, and an optional `i` — with
/// rustio's one size parser, [`rustio_config::parse_size`].
pub fn parse_size(text: &str) -> Result<u64> {
    rustio_config::parse_size(text).map_err(|e| {
        Error::rule(
            "sizes are a number with an optional unit k, M, G or T (powers of 1024), e.g. 1G",
            match e {
                rustio_config::SizeError::Syntax(_) => format!("cannot read size {text:?}"),
                rustio_config::SizeError::Overflow(_) => e.to_string(),
            },
        )
    })
}

/// Formats bytes like targetcli's `bytes_to_human`: `512 bytes`, `1.0KiB`, `4.5GiB`.
pub fn format_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    // Display-only conversion; precision loss above 2^53 bytes is irrelevant here.
    let mut size = bytes as f64 / 1024.0;
    for unit in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        if size < 1024.0 {
            return format!("{size:.1}{unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.1}EiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("10MB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
        for bad in [
            "",
            "G",
            "1.5G",
            "-1",
            "1X",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format() {
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(1023), "1023 bytes");
        assert_eq!(format_size(1024), "1.0KiB");
        assert_eq!(format_size(1536), "1.5KiB");
        assert_eq!(format_size(10 << 20), "10.0MiB");
        assert_eq!(format_size(1 << 30), "1.0GiB");
    }
}
