//! Package URLs (<https://github.com/package-url/purl-spec>): `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`.

/// Percent-encodes one purl component: letters, digits and `.-_~` stay, everything
/// else (`+`, `@`, `/`, `:`, spaces, non-ASCII) becomes `%XX`, as the spec asks.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A purl of `kind` (`deb`, `npm`...), a namespace made of `/`-separated segments
/// (each encoded), a name, an optional version and qualifiers (empty values left out,
/// keys sorted as the spec's canonical form asks).
pub fn build(
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    version: Option<&str>,
    qualifiers: &[(&str, &str)],
) -> String {
    let mut out = format!("pkg:{kind}/");
    if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
        for seg in ns.split('/').filter(|s| !s.is_empty()) {
            out.push_str(&encode(seg));
            out.push('/');
        }
    }
    out.push_str(&encode(name));
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        out.push('@');
        out.push_str(&encode(v));
    }
    let mut q: Vec<_> = qualifiers.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort_by_key(|(k, _)| *k);
    for (i, (k, v)) in q.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        assert_eq!(
            build("deb", Some("debian"), "curl", Some("7.50.3-1"), &[("arch", "i386"), ("distro", "jessie")]),
            "pkg:deb/debian/curl@7.50.3-1?arch=i386&distro=jessie"
        );
        assert_eq!(
            build("npm", Some("@angular"), "animation", Some("12.3.1"), &[]),
            "pkg:npm/%40angular/animation@12.3.1"
        );
        assert_eq!(
            build("rpm", Some("fedora"), "curl", Some("7.50.3-1.fc25"), &[("epoch", "1"), ("arch", "i386")]),
            "pkg:rpm/fedora/curl@7.50.3-1.fc25?arch=i386&epoch=1"
        );
        assert_eq!(
            build("golang", Some("github.com/gorilla"), "context", None, &[]),
            "pkg:golang/github.com/gorilla/context"
        );
        assert_eq!(build("deb", Some("debian"), "g++", Some("4:12.2.0-3"), &[]), "pkg:deb/debian/g%2B%2B@4%3A12.2.0-3");
    }
}
