//! `diskcast formats`: every block format driver and its `-o` options, then every
//! filesystem with what diskcast does with it, from the two registries themselves.

use crate::common::args::OutputFormat;
use crate::common::print_json;
use clap::Args;
use diskcast_block::Result;
use diskcast_formats::Filesystem;
use serde_json::json;

pub fn run(a: FormatsArgs) -> Result<u8> {
    let registry = diskcast_formats::registry();
    let filesystems = diskcast_formats::filesystems();
    match a.output {
        OutputFormat::Json => {
            let mut list: Vec<_> = registry
                .drivers()
                .map(|d| {
                    let opts: Vec<_> = d.options().iter().map(|o| json!({"name": o.name, "help": o.help})).collect();
                    json!({"kind": "block", "name": d.name(), "aliases": d.aliases(), "options": opts, "stream": d.stream_options()})
                })
                .collect();
            list.extend(filesystems.iter().map(|f| {
                let ids = f.partition.map(|p| json!({"gpt": p.gpt.guid().to_string(), "mbr": p.mbr}));
                json!({"kind": "filesystem", "name": f.name, "read": f.reader.is_some(), "write": builder_names(f), "partition": ids})
            }));
            print_json(&json!(list));
        }
        OutputFormat::Human => {
            for d in registry.drivers() {
                match d.aliases() {
                    [] => println!("{}", d.name()),
                    aliases => println!("{} (also: {})", d.name(), aliases.join(", ")),
                }
                match d.stream_options() {
                    Some("") => println!("    writes to standard output"),
                    Some(o) => println!("    writes to standard output with -o {o}"),
                    None => {}
                }
                if d.options().is_empty() {
                    println!("    (no -o options)");
                }
                for o in d.options() {
                    println!("    -o {:<22} {}", format!("{}=", o.name), o.help);
                }
            }
            println!("\nFilesystems (ls, cat, extract read them; mkfs and mkdisk --part write them):");
            for f in filesystems.iter() {
                let mut can = Vec::new();
                if f.reader.is_some() {
                    can.push("read".to_string());
                }
                match builder_names(f).as_slice() {
                    [] => {}
                    [one] if *one == f.name => can.push("write".into()),
                    names => can.push(format!("write as {}", names.join(", "))),
                }
                let part = f
                    .partition
                    .map_or(String::new(), |p| format!("; partition type {}, MBR id {:#04x}", p.gpt.name(), p.mbr));
                println!("{:<10} {}{part}", f.name, can.join(", "));
            }
        }
    }
    Ok(0)
}

/// The names `mkfs` takes for `f`.
fn builder_names(f: &Filesystem) -> Vec<&'static str> {
    f.builders.iter().map(|b| b.name()).collect()
}

/// `diskcast formats` arguments.
#[derive(Debug, Args)]
pub struct FormatsArgs {
    /// Output as human text or JSON.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}
