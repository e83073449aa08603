//! The mosix.toml(5) manual page, rendered with `roff` from the commented example file
//! `etc/mosix/mosix.toml` (its comments are the documentation of each key, so the page and the
//! file cannot disagree) and checked in as `man/mosix.toml.5`.

use roff::{Roff, bold, italic, roman};

/// Renders the page from the example file's text.
pub(crate) fn page(example: &str) -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "MOSIX.TOML",
            "5",
            "",
            &format!("mosix-rs {}", mosix_core::VERSION),
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman("mosix.toml - the tunables of a MOSIX node service")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        roman("$MOSIX_ETC/mosix/mosix.toml (default "),
        bold("/etc/mosix/mosix.toml"),
        roman(")"),
    ]);
    r.control("SH", ["DESCRIPTION"]);
    let mut comment: Vec<&str> = Vec::new();
    let mut in_preamble = true;
    for line in example.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            let c = c.trim();
            // A commented-out key (a line that is TOML by itself): documented like a key, as
            // not set by default.
            if let Some((key, value)) = key_value(c).filter(|_| c.parse::<toml::Table>().is_ok()) {
                key_item(&mut r, key, value, false, &comment);
                comment.clear();
            } else if !(in_preamble && c.starts_with("/etc/mosix/mosix.toml")) {
                comment.push(c);
            }
        } else if let Some(section) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            flush(&mut r, &mut comment);
            in_preamble = false;
            let title = format!("[{section}]");
            r.control("SS", [title.as_str()]);
        } else if let Some((key, value)) = key_value(t) {
            key_item(&mut r, key, value, true, &comment);
            comment.clear();
        } else if t.is_empty() {
            flush(&mut r, &mut comment);
        }
    }
    flush(&mut r, &mut comment);
    r.control("SH", ["FILES"]);
    r.text([roman(
        "/etc/mosix/mosix.toml; the example with every default: etc/mosix/mosix.toml in the \
         source tree (installed as /usr/local/share/doc/mosix-rs/mosix.toml.example by make \
         install). MOSIX_ETC replaces /etc. setpe -c checks the file with the map.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "mosix(7), setpe(1), mosctl(1), mosix.map(5), partners(5)",
    )]);
    r.render()
}

/// `key = value` (a bare key of letters, digits and underscores).
fn key_value(s: &str) -> Option<(&str, &str)> {
    let (k, v) = s.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| (k, v.trim()))
}

fn key_item(r: &mut Roff, key: &str, value: &str, set: bool, comment: &[&str]) {
    r.control("TP", []);
    if set {
        r.text([bold(key), roman(" = "), italic(value)]);
    } else {
        r.text([
            bold(key),
            roman(" (not set by default; e.g. "),
            italic(value),
            roman(")"),
        ]);
    }
    if !comment.is_empty() {
        r.text([roman(comment.join(" "))]);
    }
}

fn flush(r: &mut Roff, comment: &mut Vec<&str>) {
    if !comment.is_empty() {
        r.control("PP", []);
        r.text([roman(comment.join(" "))]);
        comment.clear();
    }
}
