//! `diskcast create`: a new empty image, optionally on top of a backing file.

use crate::common::args::{OpenArgs, WriteArgs};
use crate::common::output::ImageWriter;
use crate::common::{Images, create_options, option_map, qemu_format_name};
use clap::Args;
use diskcast_block::output::parent_dir;
use diskcast_block::size::parse_size;
use diskcast_block::{Error, Result};

pub fn run(a: CreateArgs) -> Result<u8> {
    let images = Images::new(&OpenArgs::default())?;
    let driver = images.registry.get(&a.format)?;
    let mut opts = create_options(&a.options, false)?;
    opts.backing_file = a.backing.clone();
    opts.backing_format = a.backing_format.clone();
    driver.validate(&opts)?; // before anything is opened
    let mut size = a.size.as_deref().map(parse_size).transpose()?;
    if let Some(backing) = &a.backing {
        // The user named this file, so it may be opened; like qemu, a relative name is
        // relative to the new image's directory.
        let path = parent_dir(&a.file).join(backing);
        let below = images.open(&path, a.backing_format.as_deref())?;
        size.get_or_insert(below.size());
        opts.backing_format.get_or_insert_with(|| below.info().format);
    }
    let size = size.ok_or_else(|| Error::argument("give a SIZE (e.g. 10G), or -b BACKING to take its size"))?;
    if !a.quiet {
        println!("{}", formatting_line(&a, driver.name(), size, &opts)?);
    }
    let backing = opts.backing_file.as_ref().map(|b| parent_dir(&a.file).join(b));
    let inputs = Vec::from_iter(backing);
    ImageWriter::open(&a.file, &inputs, driver.name(), opts, &WriteArgs::default())?.write_empty(size)?;
    Ok(0)
}

/// One format's options as `qemu-img create` prints them: `(name, printed default)`.
type FormatOptions = &'static [(&'static str, Option<&'static str>)];

/// The options `qemu-img create` prints after `fmt=`, per format, in its order: each with
/// the value it prints when the option is not given (`None`: printed only when given).
/// `size` is the virtual size, `backing_file`/`backing_fmt` are -b/-F.
const FORMATTING: &[(&str, FormatOptions)] = &[
    ("raw", &[("size", None), ("preallocation", None)]),
    (
        "qcow2",
        &[
            ("cluster_size", Some("65536")),
            ("extended_l2", Some("off")),
            ("preallocation", None),
            ("compression_type", Some("zlib")),
            ("size", None),
            ("backing_file", None),
            ("backing_fmt", None),
            ("compat", None),
            ("lazy_refcounts", Some("off")),
            ("refcount_bits", Some("16")),
        ],
    ),
    (
        "vmdk",
        &[
            ("size", None),
            ("adapter_type", None),
            ("compat6", Some("off")),
            ("hwversion", Some("undefined")),
            ("subformat", None),
            ("zeroed_grain", None),
        ],
    ),
    ("vpc", &[("size", None), ("subformat", None), ("force_size", None)]),
    (
        "vhdx",
        &[
            ("size", None),
            ("log_size", Some("1048576")),
            ("block_size", Some("0")),
            ("subformat", None),
            ("block_state_zero", None),
        ],
    ),
    ("vdi", &[("size", None), ("static", Some("off")), ("preallocation", None)]),
];

/// Options qemu prints as byte counts whatever suffix they were given with.
const SIZE_OPTIONS: &[&str] = &["cluster_size", "log_size", "block_size"];

/// qemu-img create's line: `Formatting 'FILE', fmt=FMT key=value ...`, the options in
/// qemu's order for the format ([`FORMATTING`]); options only diskcast takes follow.
fn formatting_line(
    a: &CreateArgs,
    format: &str,
    size: u64,
    opts: &diskcast_block::registry::CreateOptions,
) -> Result<String> {
    let fmt = qemu_format_name(format);
    let mut given = option_map(&a.options)?;
    let mut line = format!("Formatting '{}', fmt={fmt}", a.file.display());
    let order = FORMATTING.iter().find(|(f, _)| *f == fmt).map_or(&[][..], |(_, o)| *o);
    for (key, default) in order {
        let value = match *key {
            "size" => Some(size.to_string()),
            "backing_file" => opts.backing_file.clone(),
            "backing_fmt" => opts.backing_format.clone(),
            k => match given.remove(k) {
                Some(v) if SIZE_OPTIONS.contains(&k) => Some(parse_size(&v)?.to_string()),
                Some(v) => Some(v),
                None => default.map(str::to_string),
            },
        };
        if let Some(v) = value {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    for (k, v) in given {
        line.push_str(&format!(" {k}={v}"));
    }
    Ok(line)
}

/// `diskcast create` arguments.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Format of the new image.
    #[arg(short = 'f', long = "format", value_name = "FMT", default_value = "raw")]
    pub format: String,
    /// Format options, comma separated (`diskcast formats` lists them); every format also
    /// takes preallocation=off|falloc|full (raw reserves or writes the whole file).
    #[arg(short = 'o', long = "format-options", value_name = "KEY=VALUE,..")]
    pub options: Vec<String>,
    /// Backing file to record in the new image.
    #[arg(short = 'b', value_name = "BACKING")]
    pub backing: Option<String>,
    /// Format of the backing file (probed if not given).
    #[arg(short = 'F', value_name = "FMT")]
    pub backing_format: Option<String>,
    /// Print nothing but errors: no "Formatting 'FILE', fmt=.." line (qemu-img's, with
    /// the options in its order).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    pub file: std::path::PathBuf,
    /// Virtual size, e.g. 10G (taken from the backing file if left out).
    pub size: Option<String>,
}
