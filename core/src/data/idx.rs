//! Reader for the IDX file format used by MNIST and Fashion-MNIST.
//!
//! An IDX file is a 4-byte magic number `00 00 TT ND` (`TT` the element type,
//! `ND` the number of dimensions), then `ND` big-endian `u32` dimension sizes,
//! then the elements in row-major order. Only element type `0x08` (unsigned
//! byte) is supported. Files may be gzip-compressed; compression is detected
//! from the gzip magic bytes `1f 8b`, never from the file name.

use anyhow::{bail, Result};
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::Path;

/// Element type code of unsigned bytes, the only one supported.
const TYPE_U8: u8 = 0x08;
/// Most dimensions an IDX header may declare.
const MAX_DIMS: usize = 8;
/// Largest payload accepted (1 GiB, twenty times the MNIST training images);
/// larger headers are treated as corrupt.
const MAX_ELEMENTS: usize = 1 << 30;

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimension sizes, outermost first (e.g. `[N, H, W]` for images).
    pub dims: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file, plain or gzip-compressed, as a stream: the header first,
/// then exactly the bytes its dims announce (so a file whose size disagrees
/// with its header, a gzip bomb, `/dev/zero` or a FIFO is refused without being
/// read whole or hanging).
///
/// Errors name `path` and the defect: missing file, not a regular file,
/// unreadable file, corrupt gzip stream, or any header/payload problem.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    use std::io::BufRead;
    let origin = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{origin}: not found"),
        Err(e) => bail!("{origin}: cannot read file: {e}"),
    };
    if !meta.is_file() {
        bail!("{origin}: not a regular file (a device, FIFO or folder cannot hold an IDX data set)");
    }
    let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{origin}: cannot read file: {e}"))?;
    let mut r = std::io::BufReader::new(f);
    let head = r.fill_buf().map_err(|e| anyhow::anyhow!("{origin}: cannot read file: {e}"))?;
    if is_gzip(head) {
        read_stream(MultiGzDecoder::new(r), &origin, None)
    } else {
        read_stream(r, &origin, Some(meta.len()))
    }
}

/// The IDX encoding of `a` (unsigned bytes, uncompressed): what [`parse_idx`] reads back.
pub fn encode_idx(a: &IdxArray) -> Result<Vec<u8>> {
    if a.dims.is_empty() || a.dims.len() > MAX_DIMS {
        bail!("IDX: {} dims, expected 1 to {MAX_DIMS}", a.dims.len());
    }
    if a.dims.iter().product::<usize>() != a.data.len() {
        bail!("IDX: dims {:?} do not hold {} bytes", a.dims, a.data.len());
    }
    let mut out = vec![0, 0, TYPE_U8, a.dims.len() as u8];
    for &d in &a.dims {
        out.extend_from_slice(
            &u32::try_from(d).map_err(|_| anyhow::anyhow!("IDX: dim {d} exceeds u32"))?.to_be_bytes(),
        );
    }
    out.extend_from_slice(&a.data);
    Ok(out)
}

/// Returns true when `bytes` starts with the gzip magic number.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Parses IDX content held in memory; gzip-compressed content is decompressed
/// as it is read, never past what the header announces. `origin` (a path or
/// other label) starts every error message.
pub fn parse_idx(bytes: &[u8], origin: &str) -> Result<IdxArray> {
    if is_gzip(bytes) {
        return read_stream(MultiGzDecoder::new(bytes), origin, None);
    }
    read_stream(bytes, origin, Some(bytes.len() as u64))
}

/// Reads IDX content from `r`: header, then the payload. `len` is the total
/// size when known (an uncompressed file), checked against the header before
/// the payload is read; a gzip stream (`None`) is read only as far as the
/// header's dims plus one byte to find trailing garbage.
fn read_stream(mut r: impl Read, origin: &str, len: Option<u64>) -> Result<IdxArray> {
    let gz = len.is_none();
    let io = |e: std::io::Error, what: &str| -> anyhow::Error {
        if gz {
            anyhow::anyhow!("{origin}: corrupt or truncated gzip stream: {e}")
        } else {
            anyhow::anyhow!("{origin}: {what}: {e}")
        }
    };
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic).map_err(|e| io(e, "cannot read"))?;
    if got < 4 {
        bail!("{origin}: truncated IDX header: expected at least 4 bytes, {got} present");
    }
    if magic[0] != 0 || magic[1] != 0 {
        bail!(
            "{origin}: bad IDX magic: first two bytes are {:#04x} {:#04x}, expected 0x00 0x00 \
             (not an IDX file?)",
            magic[0],
            magic[1]
        );
    }
    let type_code = magic[2];
    if type_code != TYPE_U8 {
        bail!("{origin}: unsupported IDX element type {type_code:#04x} (only 0x08, unsigned byte, is supported)");
    }
    let ndims = magic[3] as usize;
    if ndims == 0 || ndims > MAX_DIMS {
        bail!("{origin}: bad IDX dimension count {ndims} (expected 1 to {MAX_DIMS})");
    }
    let header_len = 4 + 4 * ndims;
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_up_to(&mut r, &mut dim_bytes).map_err(|e| io(e, "cannot read"))?;
    if got < dim_bytes.len() {
        bail!("{origin}: truncated IDX header: expected {header_len} bytes, {} present", 4 + got);
    }
    let dims: Vec<usize> =
        dim_bytes.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let count = element_count(&dims, origin)?;
    let expected = header_len + count;
    if let Some(len) = len {
        let len = len as usize;
        if len < expected {
            bail!("{origin}: truncated IDX data: dims {dims:?} expected {expected} bytes, {len} present");
        }
        if len > expected {
            bail!(
                "{origin}: trailing garbage: dims {dims:?} expected {expected} bytes, {len} present ({} extra)",
                len - expected
            );
        }
    }
    let mut data = vec![0u8; count];
    let got = read_up_to(&mut r, &mut data).map_err(|e| io(e, "cannot read"))?;
    if got < count {
        bail!("{origin}: truncated IDX data: dims {dims:?} expected {expected} bytes, {} present", header_len + got);
    }
    let mut extra = [0u8; 1];
    if read_up_to(&mut r, &mut extra).map_err(|e| io(e, "cannot read"))? > 0 {
        bail!("{origin}: trailing garbage: dims {dims:?} expected {expected} bytes, more present");
    }
    Ok(IdxArray { dims, data })
}

/// Fills `buf` from `r` as far as the stream goes; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Product of `dims`, rejecting zero sizes and absurd totals.
fn element_count(dims: &[usize], origin: &str) -> Result<usize> {
    let mut count: usize = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 {
            bail!("{origin}: bad IDX dims {dims:?}: dimension {i} is zero");
        }
        count = match count.checked_mul(d) {
            Some(c) if c <= MAX_ELEMENTS => c,
            _ => bail!("{origin}: absurd IDX dims {dims:?}: more than {MAX_ELEMENTS} elements"),
        };
    }
    Ok(count)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    /// Builds raw IDX bytes of type `ty` with `dims` and `data`.
    pub(crate) fn make_idx(ty: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn encode_round_trips_and_refuses_a_mismatch() {
        let a = IdxArray { dims: vec![2, 1, 3], data: vec![1, 2, 3, 4, 5, 6] };
        let bytes = encode_idx(&a).unwrap();
        assert_eq!(bytes, make_idx(8, &[2, 1, 3], &a.data));
        assert_eq!(parse_idx(&bytes, "x").unwrap(), a);
        assert!(encode_idx(&IdxArray { dims: vec![2], data: vec![1] }).is_err());
        assert!(encode_idx(&IdxArray { dims: vec![], data: vec![] }).is_err());
    }

    /// Gzip-compresses `bytes`.
    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", parse_idx(bytes, "ORIGIN").unwrap_err())
    }

    #[test]
    fn parses_plain_and_gzip() {
        let raw = make_idx(8, &[2, 3], &[1, 2, 3, 4, 5, 6]);
        let want = IdxArray { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] };
        assert_eq!(parse_idx(&raw, "x").unwrap(), want);
        assert_eq!(parse_idx(&gzip(&raw), "x").unwrap(), want);
    }

    #[test]
    fn reads_files_regardless_of_extension() {
        let dir = tempfile::tempdir().unwrap();
        let raw = make_idx(8, &[4], &[9, 8, 7, 6]);
        let p1 = dir.path().join("plain.gz");
        let p2 = dir.path().join("packed");
        std::fs::write(&p1, &raw).unwrap();
        std::fs::write(&p2, gzip(&raw)).unwrap();
        assert_eq!(read_idx(&p1).unwrap().data, vec![9, 8, 7, 6]);
        assert_eq!(read_idx(&p2).unwrap().dims, vec![4]);
    }

    #[test]
    fn bad_inputs_name_origin_and_defect() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 0, 8, 1, 0, 0, 0, 1, 5], "bad IDX magic"),
            (make_idx(0x0d, &[1], &[0, 0, 0, 0]), "unsupported IDX element type 0x0d"),
            (make_idx(8, &[2, 0], &[]), "dimension 1 is zero"),
            (make_idx(8, &[], &[]), "dimension count 0"),
            (make_idx(8, &[u32::MAX, u32::MAX, 16], &[]), "absurd"),
            (make_idx(8, &[2, 3], &[1, 2, 3]), "truncated IDX data: dims [2, 3] expected 18 bytes, 15 present"),
            (make_idx(8, &[2], &[1, 2, 3]), "trailing garbage"),
            (vec![0, 0, 8], "truncated IDX header"),
            (make_idx(8, &[2, 3, 4], &[])[..10].to_vec(), "truncated IDX header"),
        ];
        for (bytes, defect) in cases {
            let msg = err(&bytes);
            assert!(msg.starts_with("ORIGIN: "), "{msg}");
            assert!(msg.contains(defect), "{msg} lacks {defect}");
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let gz = gzip(&make_idx(8, &[64], &[7; 64]));
        let msg = err(&gz[..gz.len() / 2]);
        assert!(msg.starts_with("ORIGIN: ") && msg.contains("gzip"), "{msg}");
        let mut bad = gz.clone();
        bad[12] ^= 0xff;
        bad[13] ^= 0xff;
        assert!(parse_idx(&bad, "ORIGIN").is_err());
    }

    /// Not regular files, a gzip bomb (1 GiB of zeros behind a header announcing 16 bytes), and
    /// a file whose size disagrees with its header are refused without reading them whole.
    #[test]
    fn devices_bombs_and_size_mismatches_are_refused() {
        let msg = format!("{:#}", read_idx(Path::new("/dev/zero")).unwrap_err());
        assert!(msg.contains("/dev/zero") && msg.contains("not a regular file"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let mut bomb = make_idx(8, &[16], &[0; 16]);
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&bomb).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        bomb = enc.finish().unwrap();
        assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
        let p = dir.path().join("bomb");
        std::fs::write(&p, &bomb).unwrap();
        let msg = format!("{:#}", read_idx(&p).unwrap_err());
        assert!(msg.contains("trailing garbage"), "{msg}");
        let big = dir.path().join("big");
        let mut f = std::fs::File::create(&big).unwrap();
        f.write_all(&make_idx(8, &[4], &[1, 2, 3, 4])).unwrap();
        f.set_len(3 << 30).unwrap(); // sparse: 3 GiB on paper
        let msg = format!("{:#}", read_idx(&big).unwrap_err());
        assert!(msg.contains("trailing garbage") && msg.contains("expected 12 bytes"), "{msg}");
    }

    #[test]
    fn missing_file_says_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope-idx1-ubyte");
        let msg = format!("{:#}", read_idx(&p).unwrap_err());
        assert!(msg.contains(&p.display().to_string()) && msg.contains("not found"), "{msg}");
    }
}
