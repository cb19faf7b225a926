//! `diskcast bench`: qemu-img bench. COUNT requests of BUFSIZE bytes, DEPTH in flight,
//! the first at OFFSET and each next one STEP further on, wrapping to stay inside the
//! image; reads, or with `-w` writes of a pattern byte through the format's in-place
//! writer. It prints what qemu-img prints (the "Sending ..." line, a "Sending flush ..."
//! line with `--flush-interval`, "Run completed in X seconds.") and exits as it does:
//! 0, or 1 for any error (a bad flag, an image it cannot open, a failed request).

use crate::common::args::{CacheMode, OpenArgs, ShareArgs};
use crate::common::{Images, image_and_format};
use clap::Args;
use diskcast_block::io::ImageFile;
use diskcast_block::lock::{LockMode, apply};
use diskcast_block::registry::CreateOptions;
use diskcast_block::size::parse_size;
use diskcast_block::{BlockRead, BlockWrite, Encoded, Error, Result};
use diskcast_layout::u64_from_usize;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// qemu-img keeps count, depth, buffer size, step and flush interval in a C int.
const MAX_INT: u64 = 2_147_483_647;
/// qemu-img keeps the offset in an int64.
const MAX_OFFSET: u64 = 9_223_372_036_854_775_807;
/// Threads serving the queue at most: qemu's thread pool for AIO has 64 workers too.
const MAX_WORKERS: u64 = 64;
/// Buffer memory of all workers together: past it, fewer requests are in flight (qemu
/// allocates DEPTH * BUFSIZE bytes at once, whatever that comes to).
const MAX_BUFFER_BYTES: u64 = 1 << 30;

pub fn run(a: BenchArgs) -> Result<u8> {
    let plan = Plan::parse(&a)?;
    let (path, format) = image_and_format(&a.file, a.image_opts, a.format.as_ref())?;
    // Opened before the first line is printed, as qemu-img opens it.
    let target = match a.write {
        true => Target::open_writer(&path, format.as_deref())?,
        false => Target::open_reader(&path, format.as_deref(), a.share)?,
    };
    let kind = if a.write { "write" } else { "read" };
    let mut out = std::io::stdout().lock();
    let printed = writeln!(
        out,
        "Sending {} {kind} requests, {} bytes each, {} in parallel (starting at offset {}, step size {})",
        plan.count, plan.bufsize, plan.depth, plan.offset, plan.step
    )
    .and_then(|()| match plan.flush_interval {
        0 => Ok(()),
        n => writeln!(out, "Sending flush every {n} requests"),
    })
    .and_then(|()| out.flush());
    printed.map_err(|e| Error::io("cannot write to standard output", e))?;
    let started = Instant::now();
    target.run(&plan, &path)?;
    let seconds = started.elapsed().as_secs_f64();
    writeln!(out, "Run completed in {seconds:.3} seconds.")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write to standard output", e))?;
    Ok(0)
}

/// The checked flags: what qemu-img bench would run.
#[derive(Debug)]
struct Plan {
    count: u64,
    depth: u64,
    offset: u64,
    bufsize: u64,
    /// Never 0: qemu-img's step 0 means one buffer size.
    step: u64,
    pattern: u8,
    /// 0: no flushes.
    flush_interval: u64,
    /// Wait for the requests in flight before each flush (no `--no-drain`).
    drain: bool,
    /// Flush after every write (`-t writethrough`, `-t directsync`).
    write_through: bool,
    /// Flushes are ignored (`-t unsafe`); the in-place writer's own final sync stays.
    unsafe_cache: bool,
}

impl Plan {
    /// The flags checked as qemu-img checks them, with its messages, in its order.
    fn parse(a: &BenchArgs) -> Result<Self> {
        let count = int("request count", &a.count, 1, MAX_INT)?;
        let depth = int("queue depth", &a.depth, 1, MAX_INT)?;
        let offset = size("offset", &a.offset, 0, MAX_OFFSET)?;
        let bufsize = size("buffer size", &a.buffer_size, 1, MAX_INT)?;
        let step = size("step size", &a.step_size, 0, MAX_INT)?;
        let pattern = u8::try_from(int("pattern byte", &a.pattern, 0, 255)?).unwrap_or(u8::MAX);
        let flush_interval = int("flush interval", &a.flush_interval, 0, MAX_INT)?;
        let native = a.native || a.aio == Some(Aio::Native);
        if native && !matches!(a.cache, Some(CacheMode::None | CacheMode::Directsync)) {
            return Err(Error::argument(
                "aio=native was specified, but it requires cache.direct=on, which was not specified \
                 (add -t none, or drop -n / -i native)",
            ));
        }
        if a.write && a.share.force_share {
            return Err(Error::argument(
                "force-share=on can only be used with read-only images (-U reads an image another \
                 process writes; drop -U or -w)",
            ));
        }
        if !a.write && flush_interval != 0 {
            return Err(Error::argument("--flush-interval is only available in write tests"));
        }
        if flush_interval != 0 && flush_interval < depth {
            return Err(Error::argument("Flush interval can't be smaller than depth"));
        }
        Ok(Plan {
            count,
            depth,
            offset,
            bufsize,
            step: if step == 0 { bufsize } else { step },
            pattern,
            flush_interval,
            drain: !a.no_drain,
            write_through: matches!(a.cache, Some(CacheMode::Writethrough | CacheMode::Directsync)),
            unsafe_cache: a.cache == Some(CacheMode::Unsafe),
        })
    }

    /// Where request `i` starts: the first at OFFSET as given, each next one STEP further,
    /// wrapped below `size - bufsize` so that it ends inside the image (qemu's rule since
    /// it stopped wrapping below `size`, which let a request run past the end).
    fn offset_of(&self, i: u64, size: u64) -> u64 {
        if i == 0 {
            return self.offset;
        }
        if size <= self.bufsize {
            return 0;
        }
        let span = u128::from(size - self.bufsize);
        let at = (u128::from(self.offset) + u128::from(i) * u128::from(self.step)) % span;
        u64::try_from(at).unwrap_or(0)
    }

    /// Threads to run: one per request in flight, within [`MAX_WORKERS`] and [`MAX_BUFFER_BYTES`].
    fn workers(&self) -> usize {
        let by_memory = (MAX_BUFFER_BYTES / self.bufsize).max(1);
        let n = self.depth.min(self.count).min(MAX_WORKERS).min(by_memory);
        usize::try_from(n).unwrap_or(1)
    }
}

/// qemu-img's integer flags (`-c`, `-d`, `--pattern`, `--flush-interval`): a number in C
/// notation (`0x` hex, leading `0` octal), within `min..=max`.
fn int(what: &str, text: &str, min: u64, max: u64) -> Result<u64> {
    let t = text.trim();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None if t.len() > 1 && t.starts_with('0') => (&t[1..], 8),
        None => (t, 10),
    };
    let negative = digits.strip_prefix('-');
    match i128::from_str_radix(negative.unwrap_or(digits), radix) {
        Ok(n) if negative.is_none() && (i128::from(min)..=i128::from(max)).contains(&n) => {
            u64::try_from(n).map_err(|_| between(what, min, max))
        }
        Ok(_) => Err(between(what, min, max)),
        Err(_) => Err(Error::argument(format!("Invalid {what} specified: '{text}'."))),
    }
}

/// qemu-img's size flags (`-o`, `-s`, `-S`): bytes with an optional suffix (K, M, G...).
fn size(what: &str, text: &str, min: u64, max: u64) -> Result<u64> {
    match parse_size(text) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(between(what, min, max)),
        Err(_) if text.trim().starts_with('-') => Err(between(what, min, max)),
        Err(_) => Err(Error::argument(format!("Invalid {what} specified: '{text}'."))),
    }
}

fn between(what: &str, min: u64, max: u64) -> Error {
    Error::argument(format!("Invalid {what} specified. Must be between {min} and {max}."))
}

/// The image the requests go to.
enum Target {
    /// The image, and the registry whose locks hold it while it is read.
    Read { image: Box<dyn BlockRead>, _locks: Images },
    /// The format's in-place writer, and a second handle on the same open file for
    /// flushes (never the name opened again).
    Write { writer: Box<dyn BlockWrite>, sync: std::fs::File },
}

impl Target {
    fn open_reader(path: &Path, format: Option<&str>, share: ShareArgs) -> Result<Self> {
        let images = Images::new(&OpenArgs { share, ..OpenArgs::default() })?;
        let image = images.open(path, format)?;
        Ok(Target::Read { image, _locks: images })
    }

    /// Opens the image for writing in place, locked as qemu locks an image it writes;
    /// raw writes the guest bytes themselves, qcow2, VDI, VHD, VHDX and VMDK edit the image.
    fn open_writer(path: &Path, format: Option<&str>) -> Result<Self> {
        let file = ImageFile::open_rw_nofollow(path)?;
        apply(file.file(), path, LockMode::Write)?;
        // Its format and size are read through a second handle, which our own lock must not stop.
        let images = Images::new(&OpenArgs { share: ShareArgs { force_share: true }, ..OpenArgs::default() })?;
        let driver = match format {
            Some(f) => images.registry.get(f)?,
            None => images.registry.probe(path)?,
        };
        if !driver.writes_in_place() && !driver.edits_in_place() {
            return Err(Error::argument(format!(
                "bench -w writes through a format's in-place writer, and {}; run the read benchmark (no -w), \
                 or bench a raw copy (diskcast convert -O raw)",
                images.registry.not_in_place(driver)
            ))
            .with_file(path));
        }
        let size = images.registry.open(path, Some(driver.name()), &images.context_without_backing())?.size();
        let sync = file.file().try_clone().map_err(|e| Error::io("cannot open for writing", e).with_file(path))?;
        let writer = driver.write_into(file, size, &CreateOptions::default())?;
        Ok(Target::Write { writer, sync })
    }

    fn size(&self) -> u64 {
        match self {
            Target::Read { image, .. } => image.size(),
            Target::Write { writer, .. } => writer.size(),
        }
    }

    /// Runs the plan's requests on [`Plan::workers`] threads, each taking the next
    /// request number; the first error stops them all.
    fn run(self, plan: &Plan, path: &Path) -> Result<()> {
        let size = self.size();
        let next = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        // Requests hold it shared; a draining flush takes it alone, once those in flight end.
        let in_flight = RwLock::new(());
        let target = Arc::new(self);
        let worker = || -> Result<()> {
            let mut buf = vec![plan.pattern; usize::try_from(plan.bufsize).unwrap_or(usize::MAX)];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.count || failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let offset = plan.offset_of(i, size);
                let result = {
                    let _request = in_flight.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                    target.request(plan, &mut buf, offset, size, path)
                };
                if let Err(e) = result {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                let completed = done.fetch_add(1, Ordering::Relaxed) + 1;
                if plan.flush_interval != 0 && completed.is_multiple_of(plan.flush_interval) {
                    let _drained =
                        plan.drain.then(|| in_flight.write().unwrap_or_else(std::sync::PoisonError::into_inner));
                    target.flush(plan, path)?;
                }
            }
        };
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..plan.workers()).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::argument("a bench thread panicked"))))
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        match Arc::into_inner(target) {
            Some(Target::Write { writer, sync }) => {
                writer.finish()?;
                match plan.unsafe_cache {
                    true => Ok(()),
                    false => sync.sync_data().map_err(|e| Error::io("cannot flush", e).with_file(path)),
                }
            }
            _ => Ok(()),
        }
    }

    /// One request of `buf.len()` bytes at `offset`, which must end inside the image.
    fn request(&self, plan: &Plan, buf: &mut [u8], offset: u64, size: u64, path: &Path) -> Result<()> {
        let len = u64_from_usize(buf.len());
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::argument(format!(
                "Failed request: {len} bytes at offset {offset} end past the image's {size} bytes \
                 (choose -o OFFSET and -s BUFFER_SIZE inside the image)"
            ))
            .with_file(path));
        }
        match self {
            Target::Read { image, .. } => image.read_at(buf, offset),
            Target::Write { writer, .. } => {
                writer.write_encoded(Encoded::Plain { offset, data: buf.to_vec() })?;
                if plan.write_through { self.flush(plan, path) } else { Ok(()) }
            }
        }
    }

    /// A flush: the written data synced to the disk (nothing with `-t unsafe`, or for reads).
    fn flush(&self, plan: &Plan, path: &Path) -> Result<()> {
        match self {
            Target::Write { sync, .. } if !plan.unsafe_cache => {
                sync.sync_data().map_err(|e| Error::io("cannot flush", e).with_file(path))
            }
            _ => Ok(()),
        }
    }
}

/// qemu-img's AIO back ends (`-i`); diskcast runs its requests on threads with all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Aio {
    Threads,
    Native,
    #[value(name = "io_uring")]
    IoUring,
}

/// `diskcast bench` arguments, as qemu-img bench takes them.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Number of requests to send.
    #[arg(short = 'c', long = "count", value_name = "COUNT", allow_hyphen_values = true, default_value = "75000")]
    pub count: String,
    /// Number of requests in flight at once.
    #[arg(short = 'd', long = "depth", value_name = "DEPTH", allow_hyphen_values = true, default_value = "64")]
    pub depth: String,
    /// Format of FILE (probed if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// FILE is qemu's option string `driver=FMT,file.filename=PATH` (plain forms only).
    #[arg(long = "image-opts")]
    pub image_opts: bool,
    /// Cache mode, as in qemu-img (default writeback): writethrough and directsync flush
    /// after every write, unsafe ignores flushes (the raw writer still syncs once at the
    /// end). diskcast goes through the page cache in every mode (no O_DIRECT for none and
    /// directsync).
    #[arg(short = 't', long = "cache", value_name = "CACHE", value_enum)]
    pub cache: Option<CacheMode>,
    /// AIO back end, as in qemu-img (native needs -t none or directsync, as there);
    /// diskcast runs the requests on threads whichever is named.
    #[arg(short = 'i', long = "aio", value_name = "AIO", value_enum)]
    pub aio: Option<Aio>,
    /// Native AIO (-i native).
    #[arg(short = 'n', long = "native")]
    pub native: bool,
    /// Offset of the first request (suffixes K, M, G...).
    #[arg(short = 'o', long = "offset", value_name = "OFFSET", allow_hyphen_values = true, default_value = "0")]
    pub offset: String,
    /// Size of each request (suffixes K, M, G...).
    #[arg(
        short = 's',
        long = "buffer-size",
        value_name = "BUFFER_SIZE",
        allow_hyphen_values = true,
        default_value = "4096"
    )]
    pub buffer_size: String,
    /// How far each request starts after the one before (0: the buffer size).
    #[arg(short = 'S', long = "step-size", value_name = "STEP_SIZE", allow_hyphen_values = true, default_value = "0")]
    pub step_size: String,
    /// Write instead of read: the pattern byte, through the format's in-place writer
    /// (raw), into FILE itself.
    #[arg(short = 'w', long = "write")]
    pub write: bool,
    /// The byte written (-w), 0 to 255.
    #[arg(long = "pattern", value_name = "PATTERN", allow_hyphen_values = true, default_value = "0")]
    pub pattern: String,
    /// Flush after this many requests (-w only; at least DEPTH).
    #[arg(long = "flush-interval", value_name = "FLUSH_INTERVAL", allow_hyphen_values = true, default_value = "0")]
    pub flush_interval: String,
    /// Flush without first waiting for the requests in flight.
    #[arg(long = "no-drain")]
    pub no_drain: bool,
    /// Accepted, as qemu-img accepts it: bench prints its lines either way.
    #[arg(short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub share: ShareArgs,
    /// The image.
    pub file: PathBuf,
}
