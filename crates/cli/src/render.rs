//! Presentation: text, SARIF, and finding the pickles of a file for `disasm`.

use std::borrow::Cow;
use std::io::Write;

use anyhow::Result;
use ckptguard_formats::detect::{sniff, Sniffed};
use ckptguard_formats::zip::{ZipArchive, ZipLimits};
use ckptguard_scan::{Code, Report, Severity, Verdict};
use serde_json::{json, Value};

/// Text rendering switches.
pub struct TextOptions {
    pub color: bool,
    pub globals: bool,
    pub stats: bool,
    pub quiet: bool,
}

struct Paint(bool);

impl Paint {
    fn p(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn verdict(&self, v: Verdict) -> String {
        let (c, s) = match v {
            Verdict::Safe => ("1;32", "SAFE   "),
            Verdict::Unsafe => ("1;31", "UNSAFE "),
            Verdict::Error => ("1;35", "ERROR  "),
            Verdict::Skipped => ("2", "SKIPPED"),
        };
        self.p(c, s)
    }
    fn severity(&self, s: Severity) -> String {
        let c = match s {
            Severity::Critical => "1;31",
            Severity::High => "31",
            Severity::Medium => "33",
            Severity::Low => "36",
            Severity::Info => "2",
        };
        self.p(c, &format!("{:<8}", s.as_str()))
    }
}

/// Human-readable report.
pub fn text(r: &Report, out: &mut dyn Write, o: &TextOptions) -> Result<()> {
    let paint = Paint(o.color);
    for f in &r.files {
        if o.quiet && matches!(f.verdict, Verdict::Safe | Verdict::Skipped) {
            continue;
        }
        write!(
            out,
            "{} {}  ({}",
            paint.verdict(f.verdict),
            f.path,
            f.format
        )?;
        if o.stats {
            write!(out, ", {} bytes, {} read", f.size, f.bytes_read)?;
        }
        writeln!(out, ")")?;
        if let Some(e) = &f.error {
            writeln!(out, "        {e}")?;
        }
        for x in &f.findings {
            let strong = x.severity >= r.fail_on || x.blocking;
            if !strong && f.verdict == Verdict::Safe && x.severity == Severity::Info {
                continue;
            }
            writeln!(
                out,
                "  {} {} {}: {}",
                paint.severity(x.severity),
                x.code,
                x.name,
                x.message
            )?;
            if let Some(c) = &x.call {
                writeln!(out, "           call:  {c}")?;
            } else if let Some(g) = &x.global {
                writeln!(out, "           global: {g}")?;
            }
            let mut at = String::new();
            if let Some(e) = &x.entry {
                at.push_str(e);
            }
            if let Some(off) = x.offset {
                if !at.is_empty() {
                    at.push(' ');
                }
                at.push_str(&format!("byte {off}"));
            }
            if !at.is_empty() {
                writeln!(out, "           at:    {at}")?;
            }
            if let Some(w) = &x.why {
                writeln!(out, "           why:   {w}")?;
            }
            if let Some(h) = &x.help {
                if strong {
                    writeln!(out, "           fix:   {h}")?;
                }
            }
        }
        if let Some(w) = &f.weights_only {
            if w.accepted {
                writeln!(out, "  torch.load(weights_only=True): accepted")?;
            } else if let Some(b) = &w.blocker {
                writeln!(out, "  torch.load(weights_only=True): rejected: {b}")?;
            } else {
                writeln!(
                    out,
                    "  torch.load(weights_only=True): needs torch.serialization.add_safe_globals([{}])",
                    w.needs_safe_globals.join(", ")
                )?;
            }
        }
        if o.globals && !f.globals.is_empty() {
            writeln!(out, "  globals:")?;
            for g in &f.globals {
                writeln!(out, "    {g}")?;
            }
        }
    }
    for c in &r.configs {
        writeln!(out, "using config {c}")?;
    }
    let s = &r.summary;
    writeln!(
        out,
        "{} file{} scanned: {} unsafe, {} safe, {} skipped, {} unreadable (failing at {} and above)",
        s.files,
        if s.files == 1 { "" } else { "s" },
        s.unsafe_,
        s.safe,
        s.skipped,
        s.error,
        r.fail_on.as_str()
    )?;
    Ok(())
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.8",
        Severity::High => "7.5",
        Severity::Medium => "5.0",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn uri(path: &str) -> String {
    let p = path.replace('\\', "/");
    p.chars()
        .map(|c| match c {
            ' ' => "%20".to_string(),
            '#' => "%23".to_string(),
            '?' => "%3F".to_string(),
            '%' => "%25".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// SARIF 2.1.0: one rule per code used, one result per finding.
pub fn sarif(r: &Report) -> Value {
    let mut used: Vec<Code> = r
        .files
        .iter()
        .flat_map(|f| f.findings.iter())
        .filter_map(|x| Code::parse(&x.code))
        .collect();
    used.sort();
    used.dedup();
    let rules: Vec<Value> = used
        .iter()
        .map(|c| {
            json!({
                "id": c.id(),
                "name": c.slug(),
                "shortDescription": { "text": c.slug().replace('-', " ") },
                "fullDescription": { "text": c.description() },
                "help": { "text": c.description() },
                "defaultConfiguration": { "level": level(c.severity()) },
                "properties": {
                    "security-severity": security_severity(c.severity()),
                    "tags": ["security"]
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for f in &r.files {
        for x in &f.findings {
            let Some(code) = Code::parse(&x.code) else {
                continue;
            };
            let idx = used.iter().position(|c| *c == code).unwrap_or(0);
            let mut text = x.message.clone();
            if let Some(c) = &x.call {
                text.push_str(&format!(" — call: {c}"));
            }
            if let Some(e) = &x.entry {
                text.push_str(&format!(" — in {e}"));
            }
            if let Some(o) = x.offset {
                text.push_str(&format!(" at byte {o}"));
            }
            let mut region = json!({ "startLine": 1 });
            if let (None, Some(o)) = (&x.entry, x.offset) {
                region["byteOffset"] = json!(o);
            }
            let mut props =
                json!({ "severity": x.severity.as_str(), "verdict": f.verdict.as_str() });
            if let Some(g) = &x.global {
                props["global"] = json!(g);
            }
            if let Some(e) = &x.entry {
                props["entry"] = json!(e);
            }
            results.push(json!({
                "ruleId": code.id(),
                "ruleIndex": idx,
                "level": level(x.severity),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.path) },
                        "region": region
                    }
                }],
                "properties": props
            }));
        }
    }
    json!({
        "$schema": "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "ckptguard",
                "version": r.tool.version,
                "semanticVersion": r.tool.version,
                "informationUri": "https://example.invalid/ckptguard",
                "rules": rules
            }},
            "results": results,
            "columnKind": "utf16CodeUnits"
        }]
    })
}

/// The pickle streams of a file for `disasm`: the file itself, an npy body, or zip members
/// that are pickles (or the named member).
pub fn pickle_streams<'a>(
    bytes: &'a [u8],
    entry: Option<&str>,
) -> Result<Vec<(String, Cow<'a, [u8]>)>> {
    let src: &[u8] = bytes;
    match sniff(&src)? {
        Sniffed::Zip => {
            let zip = ZipArchive::open(&src, ZipLimits::default())?;
            let mut v = Vec::new();
            for e in zip.entries() {
                let name = e.name_lossy().into_owned();
                let want = match entry {
                    Some(n) => name == n,
                    None => {
                        let l = name.to_ascii_lowercase();
                        l.ends_with(".pkl") || l.ends_with(".pickle")
                    }
                };
                if want {
                    let b = zip.read_entry(e, u64::MAX)?;
                    v.push((name, Cow::Owned(b)));
                }
            }
            if let Some(n) = entry {
                if v.is_empty() {
                    anyhow::bail!("no member named '{n}'");
                }
            }
            Ok(v)
        }
        Sniffed::Npy => {
            let h = ckptguard_formats::npy::parse_header(&src)?;
            Ok(vec![(
                "npy body".into(),
                Cow::Borrowed(&bytes[h.body_offset as usize..]),
            )])
        }
        _ => Ok(vec![("pickle".into(), Cow::Borrowed(bytes))]),
    }
}
