//! The OVF 1.0 descriptor (DMTF DSP0243 1.0.0): written for one VM with one disk, and
//! read for the disks an OVA carries.
//!
//! Written as VMware's ovftool and VirtualBox import it: `References` (the disk file and
//! its size), `DiskSection` (capacity in bytes, `populatedSize`, the streamOptimized VMDK
//! format URL), `NetworkSection` (one network), and one `VirtualSystem` with an
//! `OperatingSystemSection` and a `VirtualHardwareSection` whose items are the CPUs,
//! the memory, the disk controller, the disk on it and an Ethernet adapter. Every
//! `rasd:` element of an item is in the order of the CIM schema (alphabetical), which
//! schema-checking importers require.

use diskcast_block::{Error, Result};

/// DiskSection format URL of a streamOptimized VMDK (the one format OVF 1.0 importers
/// of VMware and VirtualBox both take).
pub const VMDK_STREAM_OPTIMIZED: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// The OVF 1.0 envelope namespace.
pub const OVF_NS_1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// The OVF 2.x envelope namespace (read only).
pub const OVF_NS_2: &str = "http://schemas.dmtf.org/ovf/envelope/2";

/// Largest descriptor read: real ones are a few KiB (ovftool's for a 10-disk VM stays
/// under 64 KiB); past this an OVA is refused rather than parsed.
pub const DESCRIPTOR_MAX: u64 = 4 << 20;

/// Most XML nodes parsed in a descriptor (roxmltree's own limit, set lower): bounds the
/// memory a hostile descriptor can take well inside [`DESCRIPTOR_MAX`].
pub const NODES_MAX: u32 = 100_000;

/// Most disks one descriptor may list.
pub const DISKS_MAX: usize = 64;

/// The storage controller the disk hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// VMware paravirtual SCSI (`VirtualSCSI`): ESXi's default for Linux guests.
    Pvscsi,
    /// LSI Logic SAS (`lsilogicsas`): where the guest lacks pvscsi.
    LsiLogicSas,
    /// SATA AHCI (`vmware.sata.ahci`, which VirtualBox's importer also takes as AHCI).
    Sata,
}

impl Controller {
    /// The name `--ova-controller` takes.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Pvscsi => "pvscsi",
            Controller::LsiLogicSas => "lsilogicsas",
            Controller::Sata => "sata",
        }
    }

    /// The controller called `name`.
    pub fn parse(name: &str) -> Result<Self> {
        [Controller::Pvscsi, Controller::LsiLogicSas, Controller::Sata]
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| Error::argument(format!("controller {name:?}: one of pvscsi, lsilogicsas, sata")))
    }

    /// CIM resource type (6 parallel SCSI HBA, 20 other storage device) and subtype.
    fn resource(self) -> (u32, &'static str, &'static str) {
        match self {
            Controller::Pvscsi => (6, "VirtualSCSI", "SCSI Controller 0"),
            Controller::LsiLogicSas => (6, "lsilogicsas", "SCSI Controller 0"),
            Controller::Sata => (20, "vmware.sata.ahci", "SATA Controller 0"),
        }
    }
}

/// The firmware the VM boots with, when known (VMware reads `vmw:Config firmware`;
/// without it every importer assumes BIOS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Efi,
}

/// The virtual machine a descriptor describes.
#[derive(Debug, Clone)]
pub struct Hardware {
    /// The VM's name (the OVA's file stem).
    pub name: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The disk's controller.
    pub controller: Controller,
    /// `None`: not said (importers assume BIOS).
    pub firmware: Option<Firmware>,
}

/// The one disk of a written package.
#[derive(Debug, Clone)]
pub struct DiskFile {
    /// Its member name (`href`).
    pub href: String,
    /// Bytes of the VMDK file.
    pub size: u64,
    /// Guest size in bytes.
    pub capacity: u64,
    /// Guest bytes that hold data (what an importer allocates at least).
    pub populated: u64,
}

/// `s` with XML's five special characters escaped, for text and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if c.is_control() => o.push('_'),
            c => o.push(c),
        }
    }
    o
}

/// One `Item` of the hardware section; `fields` are `(rasd element, value)` in schema
/// (alphabetical) order.
fn item(out: &mut String, fields: &[(&str, String)]) {
    out.push_str("      <Item>\n");
    for (k, v) in fields {
        out.push_str(&format!("        <rasd:{k}>{}</rasd:{k}>\n", esc(v)));
    }
    out.push_str("      </Item>\n");
}

/// The descriptor of a VM `hw` with the one disk `disk`.
pub fn write(hw: &Hardware, disk: &DiskFile) -> String {
    let name = esc(&hw.name);
    let mut o = String::new();
    o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    o.push_str(&format!(
        "<Envelope xmlns=\"{OVF_NS_1}\" xmlns:ovf=\"{OVF_NS_1}\" \
         xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" \
         xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" \
         xmlns:vmw=\"http://www.vmware.com/schema/ovf\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ovf:version=\"1.0\">\n"
    ));
    o.push_str("  <References>\n");
    o.push_str(&format!("    <File ovf:href=\"{}\" ovf:id=\"file1\" ovf:size=\"{}\"/>\n", esc(&disk.href), disk.size));
    o.push_str("  </References>\n");
    o.push_str("  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    o.push_str(&format!(
        "    <Disk ovf:capacity=\"{}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk1\" \
         ovf:fileRef=\"file1\" ovf:format=\"{VMDK_STREAM_OPTIMIZED}\" ovf:populatedSize=\"{}\"/>\n",
        disk.capacity, disk.populated
    ));
    o.push_str("  </DiskSection>\n");
    o.push_str("  <NetworkSection>\n    <Info>The list of logical networks</Info>\n");
    o.push_str("    <Network ovf:name=\"VM Network\">\n      <Description>The VM Network network</Description>\n    </Network>\n");
    o.push_str("  </NetworkSection>\n");
    o.push_str(&format!(
        "  <VirtualSystem ovf:id=\"{name}\">\n    <Info>A virtual machine</Info>\n    <Name>{name}</Name>\n"
    ));
    o.push_str("    <OperatingSystemSection ovf:id=\"101\" vmw:osType=\"otherLinux64Guest\">\n");
    o.push_str("      <Info>The kind of installed guest operating system</Info>\n      <Description>Linux 64-Bit</Description>\n");
    o.push_str("    </OperatingSystemSection>\n");
    o.push_str("    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n");
    o.push_str("      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n");
    o.push_str("        <vssd:InstanceID>0</vssd:InstanceID>\n");
    o.push_str(&format!("        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>\n"));
    o.push_str("        <vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>\n      </System>\n");
    let cpus = hw.cpus.to_string();
    item(
        &mut o,
        &[
            ("AllocationUnits", "hertz * 10^6".into()),
            ("Description", "Number of Virtual CPUs".into()),
            ("ElementName", format!("{cpus} virtual CPU(s)")),
            ("InstanceID", "1".into()),
            ("ResourceType", "3".into()),
            ("VirtualQuantity", cpus),
        ],
    );
    item(
        &mut o,
        &[
            ("AllocationUnits", "byte * 2^20".into()),
            ("Description", "Memory Size".into()),
            ("ElementName", format!("{}MB of memory", hw.memory_mib)),
            ("InstanceID", "2".into()),
            ("ResourceType", "4".into()),
            ("VirtualQuantity", hw.memory_mib.to_string()),
        ],
    );
    let (rtype, subtype, cname) = hw.controller.resource();
    item(
        &mut o,
        &[
            ("Address", "0".into()),
            ("Description", format!("{} controller", hw.controller.name())),
            ("ElementName", cname.into()),
            ("InstanceID", "3".into()),
            ("ResourceSubType", subtype.into()),
            ("ResourceType", rtype.to_string()),
        ],
    );
    item(
        &mut o,
        &[
            ("AddressOnParent", "0".into()),
            ("ElementName", "Hard Disk 1".into()),
            ("HostResource", "ovf:/disk/vmdisk1".into()),
            ("InstanceID", "4".into()),
            ("Parent", "3".into()),
            ("ResourceType", "17".into()),
        ],
    );
    item(
        &mut o,
        &[
            ("AddressOnParent", "7".into()),
            ("AutomaticAllocation", "true".into()),
            ("Connection", "VM Network".into()),
            ("Description", "E1000 ethernet adapter on \"VM Network\"".into()),
            ("ElementName", "Network adapter 1".into()),
            ("InstanceID", "5".into()),
            ("ResourceSubType", "E1000".into()),
            ("ResourceType", "10".into()),
        ],
    );
    if let Some(fw) = hw.firmware {
        let v = if fw == Firmware::Efi { "efi" } else { "bios" };
        o.push_str(&format!("      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"{v}\"/>\n"));
    }
    o.push_str("    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    o
}

/// A disk a descriptor lists, with the file that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvfDisk {
    /// `ovf:diskId`.
    pub id: String,
    /// The file's member name (`ovf:href` of the `File` its `fileRef` names).
    pub href: String,
    /// `ovf:format`: a URL naming the disk format.
    pub format: String,
    /// Guest size in bytes, when the descriptor says it in bytes.
    pub capacity: Option<u64>,
    /// `ovf:compression` of its file (`gzip`), if any.
    pub compression: Option<String>,
}

/// The disks (in `DiskSection` order) of descriptor `xml`; `name` is what errors call
/// it. Only OVF 1.x/2.x envelopes; no DTDs, at most [`NODES_MAX`] nodes.
pub fn disks(xml: &str, name: &str) -> Result<Vec<OvfDisk>> {
    let bad = |m: String| Error::corrupt(format!("OVF descriptor {name}: {m}"));
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: NODES_MAX };
    let doc = roxmltree::Document::parse_with_options(xml, opts).map_err(|e| bad(format!("not XML: {e}")))?;
    let root = doc.root_element();
    let ns = root.tag_name().namespace().unwrap_or("");
    if root.tag_name().name() != "Envelope" || (ns != OVF_NS_1 && ns != OVF_NS_2) {
        return Err(bad(format!(
            "the root is not an OVF 1.x or 2.x Envelope (it is {{{ns}}}{})",
            root.tag_name().name()
        )));
    }
    let attr = |n: roxmltree::Node<'_, '_>, a: &str| n.attribute((ns, a)).map(str::to_string);
    let files: Vec<roxmltree::Node<'_, '_>> = child(root, ns, "References")
        .map(|r| r.children().filter(|c| c.is_element() && c.tag_name().name() == "File").collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let Some(section) = child(root, ns, "DiskSection") else { return Ok(out) };
    for d in section.children().filter(|c| c.is_element() && c.tag_name().name() == "Disk") {
        if out.len() == DISKS_MAX {
            return Err(bad(format!("more than {DISKS_MAX} disks (DISKS_MAX)")));
        }
        let id = attr(d, "diskId").ok_or_else(|| bad("a Disk has no ovf:diskId".into()))?;
        let file_ref =
            attr(d, "fileRef").ok_or_else(|| bad(format!("disk {id} has no ovf:fileRef (an empty disk)")))?;
        let file = files
            .iter()
            .find(|f| attr(**f, "id").as_deref() == Some(file_ref.as_str()))
            .ok_or_else(|| bad(format!("disk {id} names file {file_ref}, which References lacks")))?;
        let href = attr(*file, "href").ok_or_else(|| bad(format!("file {file_ref} has no ovf:href")))?;
        let units = attr(d, "capacityAllocationUnits").unwrap_or_else(|| "byte".into());
        let capacity = attr(d, "capacity").and_then(|c| c.parse::<u64>().ok()).and_then(|c| match units.as_str() {
            "byte" => Some(c),
            "byte * 2^20" => c.checked_mul(1 << 20),
            "byte * 2^30" => c.checked_mul(1 << 30),
            _ => None,
        });
        out.push(OvfDisk {
            id,
            href,
            format: attr(d, "format").unwrap_or_default(),
            capacity,
            compression: attr(*file, "compression").filter(|c| c != "identity"),
        });
    }
    Ok(out)
}

/// The first child element of `n` called `{ns}tag`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, ns: &str, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.is_element() && c.tag_name().name() == tag && c.tag_name().namespace() == Some(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_descriptor_reads_back() {
        let hw = Hardware {
            name: "a<b>&\"c\"".into(),
            cpus: 2,
            memory_mib: 2048,
            controller: Controller::Pvscsi,
            firmware: Some(Firmware::Efi),
        };
        let disk = DiskFile { href: "a-disk1.vmdk".into(), size: 12345, capacity: 1 << 30, populated: 4096 };
        let xml = write(&hw, &disk);
        assert!(xml.contains("VirtualSCSI") && xml.contains("vmw:value=\"efi\""), "{xml}");
        let d = disks(&xml, "t.ovf").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].href, "a-disk1.vmdk");
        assert_eq!(d[0].format, VMDK_STREAM_OPTIMIZED);
        assert_eq!(d[0].capacity, Some(1 << 30));
        assert_eq!(d[0].compression, None);
    }

    #[test]
    fn hostile_descriptors_are_refused() {
        for bad in [
            "not xml",
            "<Envelope/>",
            "<!DOCTYPE x [<!ENTITY a \"aaaa\">]><Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"/>",
            "<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\"><DiskSection><Disk ovf:diskId=\"d\" ovf:fileRef=\"nope\"/></DiskSection></Envelope>",
        ] {
            let e = disks(bad, "t.ovf").unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains("t.ovf"), "{e}");
        }
    }
}
