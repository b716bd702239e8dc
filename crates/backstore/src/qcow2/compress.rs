//! Decompression of compressed clusters (qcow2.txt "Compressed Clusters Descriptor",
//! header byte 104 "compression_type").
//!
//! qemu writes each cluster as one raw deflate stream (RFC 1951, no zlib header, window
//! bits 12) or one Zstandard frame (RFC 8878). The stored bytes run to the end of the last
//! 512-byte sector, so trailing bytes after the stream are normal and ignored; what matters
//! is that exactly one cluster of output comes out.

use std::io::Read;

use super::header::{CompressionType, FormatError};

/// Decompresses `input` into `out`, which must be filled completely.
pub fn decompress(kind: CompressionType, input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    match kind {
        CompressionType::Zlib => inflate_raw(input, out),
        CompressionType::Zstd => {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| FormatError(format!("bad zstd compressed cluster: {e}")))?;
            dec.read_exact(out)
                .map_err(|e| FormatError(format!("bad zstd compressed cluster: {e}")))
        }
        CompressionType::Unknown(x) => Err(FormatError(format!(
            "compression type {x} is not supported"
        ))),
    }
}

fn inflate_raw(input: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(false);
    loop {
        let consumed = d.total_in() as usize;
        let produced = d.total_out() as usize;
        if produced == out.len() {
            return Ok(());
        }
        let status = d
            .decompress(
                &input[consumed..],
                &mut out[produced..],
                FlushDecompress::Finish,
            )
            .map_err(|e| FormatError(format!("bad deflate compressed cluster: {e}")))?;
        let progressed = d.total_in() as usize != consumed || d.total_out() as usize != produced;
        match status {
            _ if d.total_out() as usize == out.len() => return Ok(()),
            Status::StreamEnd => break,
            _ if !progressed => break,
            _ => {}
        }
    }
    Err(FormatError(format!(
        "compressed cluster inflates to {} bytes, expected {}",
        d.total_out(),
        out.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn inflates_raw_deflate_with_trailing_garbage() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let mut c = enc.finish().unwrap();
        c.extend_from_slice(&[0xAA; 300]);
        let mut out = vec![0u8; 4096];
        decompress(CompressionType::Zlib, &c, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn short_or_garbage_streams_are_errors() {
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[1u8; 100]).unwrap();
        let c = enc.finish().unwrap();
        let mut out = vec![0u8; 4096];
        let e = decompress(CompressionType::Zlib, &c, &mut out).unwrap_err();
        assert!(e.0.contains("inflates to 100 bytes"), "{e}");
        assert!(decompress(CompressionType::Zlib, &[0xff; 64], &mut out).is_err());
        assert!(decompress(CompressionType::Zstd, &[0xff; 64], &mut out).is_err());
        assert!(decompress(CompressionType::Zlib, &[], &mut out).is_err());
        let e = decompress(CompressionType::Unknown(9), &c, &mut out).unwrap_err();
        assert_eq!(e.0, "compression type 9 is not supported");
    }

    #[test]
    fn zstd_frame_from_rfc8878() {
        // A raw-block frame built by hand (RFC 8878 3.1.1): magic, frame header descriptor
        // 0x20 (single segment, 1-byte content size), content size 5, then one last raw
        // block of 5 bytes (block header 0x29 0x00 0x00: last=1, type=raw, size=5).
        let frame = [
            0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o', 0,
            0,
        ];
        let mut out = [0u8; 5];
        decompress(CompressionType::Zstd, &frame, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }
}
