//! An annotated opcode listing, like `pickletools.dis`, with the symbolic value each opcode
//! produced: imports resolved, calls rendered as Python.

use std::fmt::Write;

use crate::{machine, Analysis, Limits};

/// One line of a listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Offset of the opcode.
    pub offset: usize,
    /// Opcode name.
    pub opcode: &'static str,
    /// Argument, as text.
    pub arg: String,
    /// Symbolic stack effect.
    pub effect: &'static str,
    /// Marks open before the opcode (indentation).
    pub depth: usize,
    /// The value it produced, rendered as Python.
    pub value: Option<String>,
}

/// Disassembles every pickle in `data`, returning the listing and the analysis behind it.
pub fn disassemble<'a>(data: &'a [u8], limits: &Limits) -> (Vec<Line>, Analysis<'a>) {
    let a = machine::analyze_traced(data, limits);
    let lines = a
        .trace
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| Line {
            offset: t.offset,
            opcode: t.opcode.name(),
            arg: t.arg.clone(),
            effect: t.opcode.stack_effect(),
            depth: t.depth,
            value: t.result.map(|id| a.render(id)),
        })
        .collect();
    (lines, a)
}

/// Formats a listing as text: `offset: OPCODE arg  [effect] -> value`.
pub fn format_listing(lines: &[Line], a: &Analysis<'_>) -> String {
    let mut out = String::new();
    for l in lines {
        let indent = "  ".repeat(l.depth.min(20));
        let _ = write!(
            out,
            "{:>8}: {indent}{:<16} {:<24}",
            l.offset, l.opcode, l.arg
        );
        let _ = write!(out, " [{}]", l.effect);
        if let Some(v) = &l.value {
            let _ = write!(out, " -> {v}");
        }
        out.push('\n');
    }
    for i in &a.issues {
        let _ = writeln!(out, "{:>8}: !! {}", i.offset, i.message());
    }
    out
}
