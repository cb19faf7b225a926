//! `diskcast formats`: every driver and its `-o` options, from the drivers themselves.

use super::print_json;
use crate::args::{FormatsArgs, OutputFormat};
use diskcast_block::Result;
use serde_json::json;

pub fn run(a: FormatsArgs) -> Result<u8> {
    let registry = diskcast_formats::registry();
    match a.output {
        OutputFormat::Json => {
            let list: Vec<_> = registry
                .drivers()
                .map(|d| {
                    let opts: Vec<_> = d.options().iter().map(|o| json!({"name": o.name, "help": o.help})).collect();
                    json!({"name": d.name(), "aliases": d.aliases(), "options": opts, "stream": d.stream_options()})
                })
                .collect();
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
        }
    }
    Ok(0)
}
