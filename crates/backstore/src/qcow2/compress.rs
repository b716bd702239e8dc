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
            // The decoder holds a buffer of the declared window: refuse large ones first.
            let window = zstd_window_size(input)?;
            let limit = (out.len() as u64).max(ZSTD_MIN_WINDOW);
            if window > limit {
                return Err(FormatError(format!(
                    "zstd compressed cluster declares a window of {window} bytes, more than the {limit} bytes one cluster needs"
                )));
            }
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

/// Zstandard frame magic number, little endian (RFC 8878 3.1.1).
const ZSTD_MAGIC: u32 = 0xFD2F_B528;
/// Smallest window a frame without `Single_Segment_Flag` can declare (Window_Log >= 10).
const ZSTD_MIN_WINDOW: u64 = 1 << 10;

/// The window size a Zstandard frame declares in its header (RFC 8878 3.1.1.1).
///
/// qemu compresses a cluster as one frame of one cluster of content, so its window is
/// at most the cluster size (a frame without `Single_Segment_Flag` declares at least
/// 1 KiB).
fn zstd_window_size(frame: &[u8]) -> Result<u64, FormatError> {
    let short = || FormatError("zstd compressed cluster: frame header is truncated".into());
    let magic = frame.get(..4).ok_or_else(short)?;
    let magic = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
    if magic != ZSTD_MAGIC {
        return Err(FormatError(format!(
            "zstd compressed cluster: bad frame magic {magic:#010x}"
        )));
    }
    // Frame_Header_Descriptor: bits 7-6 Frame_Content_Size_Flag, bit 5
    // Single_Segment_Flag, bit 3 reserved (must be zero), bits 1-0 Dictionary_ID_Flag.
    let desc = *frame.get(4).ok_or_else(short)?;
    if desc & 0x08 != 0 {
        return Err(FormatError(
            "zstd compressed cluster: reserved frame header bit is set".into(),
        ));
    }
    let single_segment = desc & 0x20 != 0;
    if !single_segment {
        // Window_Descriptor: Exponent in bits 7-3, Mantissa in bits 2-0.
        let wd = *frame.get(5).ok_or_else(short)?;
        let window_log = 10 + u32::from(wd >> 3);
        let base = 1u64 << window_log; // window_log <= 41
        return Ok(base + (base / 8) * u64::from(wd & 7));
    }
    // Single segment: the window is Frame_Content_Size, after the Dictionary_ID.
    let dict_len = match desc & 3 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 4,
    };
    let fcs_len = match desc >> 6 {
        0 => 1,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + dict_len;
    let fcs = frame.get(at..at + fcs_len).ok_or_else(short)?;
    let mut le = [0u8; 8];
    le[..fcs_len].copy_from_slice(fcs);
    let value = u64::from_le_bytes(le);
    // A 2-byte Frame_Content_Size is stored minus 256.
    Ok(if fcs_len == 2 { value + 256 } else { value })
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
    fn zstd_window_sizes_from_rfc8878() {
        let magic = [0x28, 0xb5, 0x2f, 0xfd];
        let frame = |rest: &[u8]| [&magic[..], rest].concat();
        let cases: [(&[u8], u64); 12] = [
            // Single segment, Frame_Content_Size_Flag 0: 1-byte content size.
            (&[0x20, 0x05], 5),
            // Single segment, flag 1: 2 bytes, stored minus 256 (qemu, 64 KiB clusters).
            (&[0x60, 0x00, 0xff], 65536),
            // Single segment, flag 2: 4 bytes little endian (2 MiB).
            (&[0xa0, 0x00, 0x00, 0x20, 0x00], 2 << 20),
            // Single segment, flag 3: 8 bytes.
            (&[0xe0, 0, 0, 0, 0, 0, 0, 0, 1], 1 << 56),
            // Single segment with a 1-byte Dictionary_ID before the content size.
            (&[0x21, 0x07, 0x05], 5),
            // Single segment with a 4-byte Dictionary_ID.
            (&[0x23, 1, 2, 3, 4, 0x10], 16),
            // Window_Descriptor 0x00: Window_Log 10, no mantissa: 1 KiB.
            (&[0x00, 0x00], 1024),
            // Exponent 6: 64 KiB; mantissa 1 adds an eighth.
            (&[0x00, 0x30], 65536),
            (&[0x00, 0x31], 65536 + 8192),
            // Exponent 16, mantissa 4: 64 MiB + 4 * 8 MiB = 96 MiB.
            (&[0x00, 0x84], 96 << 20),
            // Dictionary_ID follows the Window_Descriptor; it does not change the window.
            (&[0x01, 0x30, 0x07], 65536),
            // The largest descriptor: Window_Log 41, mantissa 7.
            (&[0x00, 0xff], (1 << 41) + 7 * (1 << 38)),
        ];
        for (rest, want) in cases {
            assert_eq!(zstd_window_size(&frame(rest)).unwrap(), want, "{rest:x?}");
        }
        let errs: [(&[u8], &str); 5] = [
            (&[0x28, 0xb5, 0x2f], "truncated"),
            (&[0x28, 0xb5, 0x2f, 0xfe, 0x20, 0x05], "bad frame magic"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x00], "truncated"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0xe0, 1, 2, 3], "truncated"),
            (&[0x28, 0xb5, 0x2f, 0xfd, 0x28, 0x05], "reserved"),
        ];
        for (bytes, want) in errs {
            let e = zstd_window_size(bytes).unwrap_err();
            assert!(e.0.contains(want), "{bytes:x?}: {e}");
        }
    }

    /// One frame holding `data` as a single last raw block (RFC 8878 3.1.1.2: block header
    /// = Last_Block | Block_Type << 1 | Block_Size << 3, 3 bytes little endian).
    fn raw_frame(header: &[u8], data: &[u8]) -> Vec<u8> {
        let bh = 1 | (data.len() as u32) << 3;
        let mut f = vec![0x28, 0xb5, 0x2f, 0xfd];
        f.extend_from_slice(header);
        f.extend_from_slice(&bh.to_le_bytes()[..3]);
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn zstd_windows_larger_than_a_cluster_are_refused() {
        let data = vec![0x5a; 4096];
        let mut out = vec![0u8; 4096];
        // Window_Descriptor 0x10: 4 KiB, exactly the cluster.
        decompress(
            CompressionType::Zstd,
            &raw_frame(&[0x00, 0x10], &data),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
        // Single segment with a content size of one cluster, as qemu writes it.
        let fcs = (4096u16 - 256).to_le_bytes();
        let f = raw_frame(&[0x60, fcs[0], fcs[1]], &data);
        decompress(CompressionType::Zstd, &f, &mut out).unwrap();
        // One mantissa step more (4608 bytes), 96 MiB, or a content size of two clusters:
        // refused before the decoder allocates its window.
        for header in [
            &[0x00, 0x11][..],
            &[0x00, 0x84],
            &[0xa0, 0x00, 0x20, 0x00, 0x00],
        ] {
            let e =
                decompress(CompressionType::Zstd, &raw_frame(header, &data), &mut out).unwrap_err();
            assert!(e.0.contains("declares a window of"), "{header:x?}: {e}");
            assert!(e.0.contains("more than the 4096 bytes"), "{header:x?}: {e}");
        }
        // Small clusters still accept the 1 KiB minimum window of a non-single-segment
        // frame.
        let mut small = [0u8; 5];
        decompress(
            CompressionType::Zstd,
            &raw_frame(&[0x00, 0x00], b"hello"),
            &mut small,
        )
        .unwrap();
        assert_eq!(&small, b"hello");
        let e = decompress(
            CompressionType::Zstd,
            &raw_frame(&[0x00, 0x08], b"hello"),
            &mut small,
        )
        .unwrap_err();
        assert!(e.0.contains("window of 2048 bytes"), "{e}");
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
