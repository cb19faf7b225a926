//! `diskcast info`: what an image is, in human text or JSON.

use crate::common::args::{OpenArgs, OutputFormat, TlsArgs};
use crate::common::{Images, print_json, qemu_format_name, snapshot_json, snapshot_table, url_of};
use clap::Args;
use diskcast_block::size::human;
use diskcast_block::{BlockRead, ImageInfo, Result};
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub fn run(a: InfoArgs) -> Result<u8> {
    let images = Images::new(&a.open)?.with_tls(a.tls);
    // Like qemu-img info, describe the image without opening its backing file unless the
    // chain is asked for: so an untrusted image can be inspected whatever it names.
    let ctx = if a.backing_chain { images.context() } else { images.context_without_backing() };
    let image = images.open_in(&a.file, a.format.as_deref(), &ctx)?;
    images.refuse_unused_disk_choice(&[(&a.file, &image.info().format)])?;
    // The chain: (display name, image), top first. Backing names resolve against the
    // directory of the image that names them, as the gate resolved them.
    let mut chain: Vec<(PathBuf, &dyn BlockRead)> = vec![(a.file.clone(), image.as_ref())];
    while let Some((path, img)) = chain.last().cloned() {
        let (Some(below), Some(name)) = (img.backing(), img.info().backing_file) else { break };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        chain.push((dir.join(name), below));
    }
    let lvs = logical_volumes(image.as_ref(), &a.file);
    match a.output {
        OutputFormat::Json => {
            // As qemu-img: one object, or with --backing-chain an array of them, top first.
            let mut entries: Vec<Value> = chain.iter().map(|(p, img)| entry_json(p, &img.info(), &images)).collect();
            if let (Some(lvs), Some(Value::Object(top))) = (&lvs, entries.first_mut()) {
                top.insert("logical-volumes".into(), lvs.iter().map(|(j, _)| j.clone()).collect::<Vec<_>>().into());
            }
            if a.backing_chain {
                print_json(&Value::Array(entries));
            } else {
                print_json(&entries.swap_remove(0));
            }
        }
        OutputFormat::Human => {
            for (i, (path, img)) in chain.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_human(path, &img.info());
                if let (0, Some(lvs)) = (i, &lvs) {
                    println!("Logical volumes (LVM2):");
                    for (_, line) in lvs {
                        println!("    {line}");
                    }
                }
            }
        }
    }
    Ok(0)
}

/// The LVM2 logical volumes on the disk (a PV on the whole disk or on a partition), as
/// `lvs` lists them: one JSON object per LV (vg, name, size, segments with their type,
/// start, size and stripes) and one human line. `None` when the disk holds no PV; a PV
/// whose metadata cannot be read is a warning, and the rest of `info` still prints.
fn logical_volumes(disk: &dyn BlockRead, file: &Path) -> Option<Vec<(Value, String)>> {
    let table = diskcast_part::read_table(disk).ok()?;
    let lvm = match diskcast_part::lvm::scan(disk, table.as_ref()) {
        Ok(l) => l?,
        Err(e) => {
            eprintln!("diskcast: warning: {}: {e}", file.display());
            return None;
        }
    };
    let mut out = Vec::new();
    for vg in &lvm.vgs {
        for lv in &vg.lvs {
            let segments: Vec<Value> = lv
                .segments
                .iter()
                .map(|s| {
                    let kind = if s.kind == "striped" && s.stripes.len() == 1 { "linear" } else { s.kind.as_str() };
                    let stripes: Vec<Value> = s
                        .stripes
                        .iter()
                        .map(|(key, extent)| {
                            let id = vg.pvs.iter().find(|p| &p.key == key).map_or("", |p| p.id.as_str());
                            json!({"pv": key, "pv-uuid": id, "extent": extent})
                        })
                        .collect();
                    json!({"type": kind, "start": s.start, "size": s.len, "stripe-size": s.stripe_size, "stripes": stripes})
                })
                .collect();
            let mut j = json!({"vg": vg.name, "name": lv.name, "size": lv.size, "segments": segments});
            if let (Some(why), Some(obj)) = (&lv.refusal, j.as_object_mut()) {
                obj.insert("unsupported".into(), why.clone().into());
            }
            out.push((j, lv.describe()));
        }
    }
    Some(out)
}

/// Bytes the image takes on disk: its file plus its extent files (allocated blocks),
/// as qemu-img info's `actual-size` counts them; `None` if the file cannot be stat'ed.
fn disk_usage(path: &Path, info: &ImageInfo) -> Option<u64> {
    let usage = |p: &Path| std::fs::metadata(p).ok().map(|m| m.blocks().saturating_mul(512));
    let extents: u64 = info.extent_files.iter().filter(|f| f.as_path() != path).filter_map(|f| usage(f)).sum();
    usage(path).map(|n| n + extents)
}

/// One image as `qemu-img info --output=json` describes it: the same keys with the same
/// types (a script written for qemu-img reads ours unchanged), plus diskcast's own facts
/// under keys qemu does not use.
fn entry_json(path: &Path, info: &ImageInfo, images: &Images) -> Value {
    let format = qemu_format_name(&info.format);
    let mut m = serde_json::Map::new();
    m.insert("filename".into(), path.display().to_string().into());
    m.insert("format".into(), format.into());
    m.insert("virtual-size".into(), info.virtual_size.into());
    if let Some(n) = disk_usage(path, info) {
        m.insert("actual-size".into(), n.into());
    }
    m.insert("dirty-flag".into(), info.dirty.into());
    if let Some(c) = info.cluster_size {
        m.insert("cluster-size".into(), c.into());
    }
    if let Some(c) = &info.compression {
        m.insert("compression-type".into(), c.clone().into());
    }
    if let Some(b) = &info.backing_file {
        m.insert("backing-filename".into(), b.clone().into());
        // qemu's full name: relative names are relative to the image's directory.
        let full = path.parent().map_or_else(|| PathBuf::from(b), |d| d.join(b));
        m.insert("full-backing-filename".into(), full.display().to_string().into());
    }
    if let Some(b) = &info.backing_format {
        m.insert("backing-filename-format".into(), b.clone().into());
    }
    if !info.specific.is_empty() {
        m.insert("format-specific".into(), json!({"type": format, "data": info.specific}));
    }
    if !info.snapshots.is_empty() {
        m.insert("snapshots".into(), info.snapshots.iter().map(snapshot_json).collect::<Vec<_>>().into());
    }
    // The files below the image, as qemu's block graph shows them: extent files, then the
    // image's own file.
    let mut children: Vec<Value> = info
        .extent_files
        .iter()
        .filter(|f| f.as_path() != path)
        .enumerate()
        .map(|(i, f)| json!({"name": format!("extents.{i}"), "info": protocol_json(f, images)}))
        .collect();
    children.push(json!({"name": "file", "info": protocol_json(path, images)}));
    m.insert("children".into(), children.into());
    Value::Object(m)
}

/// A plain file as qemu-img info shows the protocol layer below an image.
fn file_json(path: &Path) -> Value {
    let meta = std::fs::metadata(path).ok();
    let mut v = json!({
        "children": [],
        "filename": path.display().to_string(),
        "format": "file",
        "format-specific": {"type": "file", "data": {}},
        "dirty-flag": false,
    });
    if let (Some(m), Some(obj)) = (meta, v.as_object_mut()) {
        // qemu counts a file's length in whole 512-byte sectors.
        obj.insert("virtual-size".into(), m.len().next_multiple_of(512).into());
        obj.insert("actual-size".into(), m.blocks().saturating_mul(512).into());
    }
    v
}

/// The layer below an image (or extent) as qemu-img info shows it: a file, or a URL.
fn protocol_json(path: &Path, images: &Images) -> Value {
    match url_of(path) {
        Some(url) => url_json(url, images),
        None => file_json(path),
    }
}

/// A URL as qemu-img info shows its curl protocol layer: the scheme as format, and the
/// file's length (asked of the server again).
fn url_json(url: &str, images: &Images) -> Value {
    let scheme = url.split_once(':').map_or("http", |(s, _)| s).to_ascii_lowercase();
    let mut v = json!({
        "children": [],
        "filename": url,
        "format": scheme,
        "format-specific": {"type": scheme, "data": {}},
        "dirty-flag": false,
    });
    if let (Ok(len), Some(obj)) = (images.source(Path::new(url)).and_then(|s| s.len()), v.as_object_mut()) {
        // As for a file: whole 512-byte sectors.
        obj.insert("virtual-size".into(), len.next_multiple_of(512).into());
    }
    v
}

fn print_human(path: &Path, info: &ImageInfo) {
    println!("image: {}", path.display());
    println!("file format: {}", info.format);
    println!("virtual size: {} ({} bytes)", human(info.virtual_size), info.virtual_size);
    if let Some(n) = disk_usage(path, info) {
        println!("disk size: {}", human(n));
    }
    if let Some(c) = info.cluster_size {
        println!("cluster_size: {c}");
    }
    if let Some(c) = &info.compression {
        println!("compression type: {c}");
    }
    if let Some(b) = &info.backing_file {
        println!("backing file: {b}");
    }
    if let Some(b) = &info.backing_format {
        println!("backing file format: {b}");
    }
    print!("{}", snapshot_table(&info.snapshots));
    if !info.specific.is_empty() {
        println!("Format specific information:");
        print_fields(&info.specific, 1);
    }
}

/// Prints format-specific facts as an indented tree, as qemu-img info does: scalars on
/// their key's line, objects and lists (VMDK extents, say) nested below it.
fn print_fields(map: &serde_json::Map<String, Value>, depth: usize) {
    let pad = "    ".repeat(depth);
    for (k, v) in map {
        match v {
            Value::Object(inner) => {
                println!("{pad}{k}:");
                print_fields(inner, depth + 1);
            }
            Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                println!("{pad}{k}:");
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Object(inner) => {
                            println!("{pad}    [{i}]:");
                            print_fields(inner, depth + 2);
                        }
                        other => println!("{pad}    [{i}]: {}", scalar(other)),
                    }
                }
            }
            other => println!("{pad}{k}: {}", scalar(other)),
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `diskcast info` arguments.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format of FILE (probed from its magic if not given).
    #[arg(short = 'f', long = "format", value_name = "FMT")]
    pub format: Option<String>,
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Also open and show every image of the backing chain (JSON: a "backing-chain" array).
    /// Without it no backing file is opened, so any image can be inspected safely.
    #[arg(long)]
    pub backing_chain: bool,
    #[command(flatten)]
    pub open: OpenArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The image.
    pub file: PathBuf,
}
