//! This machine's own limits, measured first in every suite run so that each figure can be
//! read as a fraction of what the hardware can do: memory copy bandwidth, loopback TCP
//! throughput, and sequential disk writes and reads that bypass the page cache (`O_DIRECT`).

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::report::{Better, Figure};

/// Keys of the limit figures.
pub const MEMCPY: &str = "limits/memcpy";
/// Loopback TCP, one connection.
pub const LOOPBACK_TCP: &str = "limits/loopback-tcp";
/// Sequential `O_DIRECT` writes (then fsync).
pub const DISK_WRITE: &str = "limits/disk-write";
/// Sequential `O_DIRECT` reads.
pub const DISK_READ: &str = "limits/disk-read";

/// Measures the limits; a limit that cannot be measured here (a file system without
/// `O_DIRECT`) is left out with the reason, in the second list.
pub fn measure(work_dir: &Path, quick: bool) -> (Vec<Figure>, Vec<(String, String)>) {
    let (memory, network, disk, repeats) =
        if quick { (32usize << 20, 64usize << 20, 32usize << 20, 3) } else { (256 << 20, 1 << 30, 1 << 30, 5) };
    let mut figures = Vec::new();
    let mut skipped = Vec::new();
    let mut keep = |key: &str, label: &str, result: anyhow::Result<Vec<f64>>| match result {
        Ok(samples) => figures.push(Figure::new(key, label, "MB/s", Better::Higher, samples)),
        Err(e) => skipped.push((key.to_string(), format!("{e:#}"))),
    };
    // Both buffers made and touched once, outside the timing: the limit is the copy, not the
    // kernel's first touch of fresh pages.
    let src = vec![0x5au8; memory];
    let mut dst = vec![0x01u8; memory];
    keep(MEMCPY, "memory copy (warm buffers)", repeat(repeats, || memcpy(&src, &mut dst)));
    drop((src, dst));
    keep(LOOPBACK_TCP, "loopback TCP, one connection", repeat(repeats, || loopback_tcp(network)));
    let file = work_dir.join(format!("limits-{}.bin", std::process::id()));
    let writes = repeat(repeats.min(3), || disk_write(&file, disk));
    let reads = if writes.is_ok() {
        repeat(repeats.min(3), || disk_read(&file, disk))
    } else {
        Err(anyhow::anyhow!("no file was written"))
    };
    let _ = std::fs::remove_file(&file);
    keep(DISK_WRITE, "disk sequential write (O_DIRECT, fsync)", writes);
    keep(DISK_READ, "disk sequential read (O_DIRECT)", reads);
    (figures, skipped)
}

fn repeat(n: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<Vec<f64>> {
    (0..n).map(|_| f()).collect()
}

/// MB/s of copying `src` into `dst` (of one length).
fn memcpy(src: &[u8], dst: &mut [u8]) -> anyhow::Result<f64> {
    dst[src.len() / 2] = 0;
    let start = Instant::now();
    dst.copy_from_slice(std::hint::black_box(src));
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(std::hint::black_box(&dst)[src.len() / 2] == src[src.len() / 2], "the copy did not happen");
    Ok(src.len() as f64 / seconds / 1e6)
}

/// MB/s of sending `bytes` over one loopback TCP connection to a thread that reads them.
fn loopback_tcp(bytes: usize) -> anyhow::Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut conn, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match conn.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    let chunk = vec![0x33u8; 1 << 20];
    let start = Instant::now();
    let mut conn = std::net::TcpStream::connect(addr)?;
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        conn.write_all(&chunk[..n])?;
        sent += n;
    }
    drop(conn);
    let got = reader.join().map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(got == bytes, "sent {bytes} bytes, {got} arrived");
    Ok(bytes as f64 / seconds / 1e6)
}

/// A buffer aligned for `O_DIRECT` (4 KiB), of `len` bytes (a multiple of 4 KiB).
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> anyhow::Result<Self> {
        anyhow::ensure!(len > 0, "an aligned buffer of no bytes");
        let layout = std::alloc::Layout::from_size_align(len, 4096)?;
        // SAFETY: the layout's size is not zero (checked above).
        let ptr = unsafe { std::alloc::alloc(layout) };
        anyhow::ensure!(!ptr.is_null(), "cannot allocate {len} bytes");
        // SAFETY: ptr is valid for len bytes, just allocated.
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Ok(Self { ptr, layout })
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid and initialized for layout.size() bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

const BLOCK: usize = 4 << 20;

/// MB/s of writing `bytes` sequentially to a new file with `O_DIRECT`, fsync included.
fn disk_write(file: &Path, bytes: usize) -> anyhow::Result<f64> {
    let _ = std::fs::remove_file(file);
    let buf = Aligned::new(BLOCK, 0xa5)?;
    let start = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(file)
        .with_context(|| format!("cannot open {} with O_DIRECT", file.display()))?;
    for _ in 0..bytes.div_ceil(BLOCK) {
        f.write_all(buf.as_slice()).with_context(|| format!("O_DIRECT write to {}", file.display()))?;
    }
    f.sync_all()?;
    Ok(bytes.div_ceil(BLOCK) as f64 * BLOCK as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// MB/s of reading the file `disk_write` wrote, with `O_DIRECT`.
fn disk_read(file: &Path, bytes: usize) -> anyhow::Result<f64> {
    let mut buf = Aligned::new(BLOCK, 0)?;
    let start = Instant::now();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(file)
        .with_context(|| format!("cannot open {} with O_DIRECT", file.display()))?;
    let mut total = 0;
    loop {
        match f.read(buf.as_mut_slice())? {
            0 => break,
            n => total += n,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(total >= bytes, "read {total} bytes of {bytes}");
    anyhow::ensure!(buf.as_slice()[0] == 0xa5, "read back other bytes than were written");
    Ok(total as f64 / seconds / 1e6)
}
