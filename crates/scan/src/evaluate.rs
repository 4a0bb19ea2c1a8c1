//! Turns a pickle [`Analysis`] into findings under a [`Policy`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ckptguard_pickle::{Analysis, IssueKind, ObjId, Value};

use crate::finding::{Code, Finding};
use crate::policy::{danger, Allow, Policy};

/// Where a pickle sits, for locating findings.
#[derive(Clone, Debug, Default)]
pub struct Location {
    /// Container member (`archive/data.pkl`), if any.
    pub entry: Option<String>,
    /// Offset of the pickle's byte 0 within the member or file.
    pub base: u64,
    /// Persistent ids are expected and checked by the container layer (torch files).
    pub persistent_ids_expected: bool,
    /// The container holds several pickles by design (torch's legacy formats).
    pub multi_pickle: bool,
}

const HELP_DANGER: &str = "Do not load this file with pickle or torch.load(weights_only=False). Get the checkpoint from a trusted source and verify its signature (ckptguard verify).";
const HELP_UNKNOWN: &str = "If you trust this global, allow it in ckptguard.toml ([allow] globals = [\"module.name\"]); torch >= 2.6 weights-only loading needs torch.serialization.add_safe_globals for it too.";

/// Aggregates repeated findings (same code, global and member) into one with a count.
#[derive(Default)]
struct Sink {
    order: Vec<(String, String, String)>,
    by_key: HashMap<(String, String, String), (Finding, usize)>,
}

impl Sink {
    fn add(&mut self, f: Finding) {
        let key = (
            f.code.clone(),
            f.global.clone().unwrap_or_default(),
            f.call
                .clone()
                .filter(|_| f.code == "CG101")
                .unwrap_or_default(),
        );
        match self.by_key.get_mut(&key) {
            Some((_, n)) => *n += 1,
            None => {
                self.order.push(key.clone());
                self.by_key.insert(key, (f, 1));
            }
        }
    }
    fn finish(mut self, out: &mut Vec<Finding>) {
        for key in self.order {
            if let Some((mut f, n)) = self.by_key.remove(&key) {
                if n > 1 {
                    f.message = format!("{} ({n} occurrences; first shown)", f.message);
                }
                out.push(f);
            }
        }
    }
}

/// Evaluates one analysed stream, appending findings to `out`.
pub fn evaluate(a: &Analysis<'_>, policy: &Policy, loc: &Location, out: &mut Vec<Finding>) {
    let mut sink = Sink::default();
    let place = |f: Finding, offset: usize| -> Finding {
        let f = f.at(loc.base + offset as u64);
        match &loc.entry {
            Some(e) => f.entry(e.clone()),
            None => f,
        }
    };

    // Which calls each import is the callable of.
    let mut calls_of: HashMap<ObjId, Vec<usize>> = HashMap::new();
    for (i, c) in a.calls.iter().enumerate() {
        calls_of.entry(c.callable).or_default().push(i);
    }

    for imp in &a.imports {
        let g = imp.qualified();
        if imp.dynamic {
            sink.add(place(
                Finding::new(Code::DynamicImport, format!("import target computed at load time: {g}"))
                    .global(g.clone())
                    .why("the module or name is produced by code in the pickle, so anything can be imported")
                    .help(HELP_DANGER),
                imp.offset,
            ));
            continue;
        }
        let calls = calls_of.get(&imp.value).map(Vec::as_slice).unwrap_or(&[]);
        let allow = policy.lookup(&imp.module, &imp.name);
        let written = imp
            .written
            .as_ref()
            .map(|(m, n)| format!(" (written as {m}.{n}, mapped by Python's 2-to-3 name table)"))
            .unwrap_or_default();
        match allow {
            None => {
                let d = danger(&imp.module, &imp.name);
                if calls.is_empty() {
                    let f = match d {
                        Some(d) => Finding::new(Code::DangerousImport, format!("imports {g}{written} ({})", d.category))
                            .why(d.why)
                            .help(HELP_DANGER),
                        None => Finding::new(Code::UnknownImport, format!("imports {g}{written}, which is not on the allowlist"))
                            .why("importing runs the module's code, and the object can be used by later opcodes")
                            .help(HELP_UNKNOWN),
                    };
                    sink.add(place(f.global(g.clone()), imp.offset));
                }
                for &ci in calls {
                    let call = a.render_call(ci);
                    let f = match d {
                        Some(d) => Finding::new(Code::DangerousCall, format!("calls {g}{written} ({})", d.category))
                            .why(d.why)
                            .help(HELP_DANGER),
                        None => Finding::new(Code::UnknownCall, format!("calls {g}{written}, which is not on the allowlist"))
                            .why("only callables known to build data are allowed; this one can do anything its code does")
                            .help(HELP_UNKNOWN),
                    };
                    sink.add(place(f.global(g.clone()).call(call), a.calls[ci].offset));
                }
            }
            Some(Allow::Call) => {}
            Some(Allow::ImportOnly) => {
                for &ci in calls {
                    sink.add(place(
                        Finding::new(
                            Code::ConstraintViolated,
                            format!("calls {g}, which is allowed only as a value, never called"),
                        )
                        .global(g.clone())
                        .call(a.render_call(ci))
                        .help(HELP_UNKNOWN),
                        a.calls[ci].offset,
                    ));
                }
            }
            Some(Allow::Reconstructor) => {
                for &ci in calls {
                    if let Err(why) = check_reconstructor(a, policy, a.calls[ci].args) {
                        sink.add(place(
                            Finding::new(
                                Code::ConstraintViolated,
                                format!("copyreg._reconstructor used unsafely: {why}"),
                            )
                            .global(g.clone())
                            .call(a.render_call(ci))
                            .why("_reconstructor instantiates any class it is given")
                            .help(HELP_UNKNOWN),
                            a.calls[ci].offset,
                        ));
                    }
                }
            }
            Some(Allow::CodecsEncode) => {
                for &ci in calls {
                    if let Err(why) = check_codecs_encode(a, a.calls[ci].args) {
                        sink.add(place(
                            Finding::new(
                                Code::ConstraintViolated,
                                format!("{g} used unsafely: {why}"),
                            )
                            .global(g.clone())
                            .call(a.render_call(ci))
                            .why("codec lookup by name can import codec modules")
                            .help(HELP_DANGER),
                            a.calls[ci].offset,
                        ));
                    }
                }
            }
        }
    }

    // Calls of things that are not imports: gadget chains.
    for (ci, c) in a.calls.iter().enumerate() {
        if a.as_import(c.callable).is_none() {
            sink.add(place(
                Finding::new(
                    Code::IndirectCall,
                    format!("calls a {} that is not an imported global", a.value(c.callable).type_name()),
                )
                .call(a.render_call(ci))
                .why("calling the result of another call is how gadget chains such as getattr(obj, name)(...) run code")
                .help(HELP_DANGER),
                c.offset,
            ));
        }
    }

    for b in &a.builds {
        if !built_by_allowed(a, policy, b.target) {
            let t = a.value(b.target);
            if matches!(t, Value::Object(_)) {
                continue; // the constructor call is already a finding
            }
            sink.add(place(
                Finding::new(Code::DisallowedBuild, format!("BUILD sets state on a {} ({})", t.type_name(), a.render(b.target)))
                    .why("setting state on a class, module or loader object runs setattr/__setstate__ on it")
                    .help(HELP_DANGER),
                b.offset,
            ));
        }
    }

    for m in &a.mutations {
        let t = a.value(m.target);
        if matches!(t, Value::Object(_)) {
            continue; // objects: allowed constructors are containers; others are already findings
        }
        sink.add(place(
            Finding::new(
                Code::DisallowedMutation,
                format!(
                    "{} calls a method of a {} ({})",
                    m.opcode.name(),
                    t.type_name(),
                    a.render(m.target)
                ),
            )
            .help(HELP_DANGER),
            m.offset,
        ));
    }

    for e in &a.extensions {
        sink.add(place(
            Finding::new(
                Code::ExtensionCode,
                format!(
                    "EXT opcode imports extension code {} from copyreg's registry",
                    e.code
                ),
            )
            .help(HELP_DANGER),
            e.offset,
        ));
    }

    if !loc.persistent_ids_expected {
        for p in &a.persistent_ids {
            sink.add(place(
                Finding::new(
                    Code::PersistentId,
                    format!("persistent id {}", a.render(p.pid)),
                ),
                p.offset,
            ));
        }
    }

    for i in &a.issues {
        let f = match (&i.kind, i.fatal) {
            (IssueKind::Limit(_), _) => Finding::new(Code::LimitExceeded, i.message()),
            (IssueKind::TrailingData { .. }, _) => Finding::new(Code::TrailingData, i.message()),
            (_, true) => Finding::new(Code::MalformedPickle, i.message()),
            (_, false) => continue,
        };
        sink.add(place(f, i.offset));
    }
    if a.pickles.len() > 1 && !loc.multi_pickle {
        sink.add(place(
            Finding::new(
                Code::MultiplePickles,
                format!("{} pickles in one stream; all analysed", a.pickles.len()),
            ),
            a.pickles[1].start,
        ));
    }
    sink.finish(out);
}

/// Whether the object at `id` was made by an allowlisted constructor.
fn built_by_allowed(a: &Analysis<'_>, policy: &Policy, id: ObjId) -> bool {
    let Value::Object(o) = a.value(id) else {
        return false;
    };
    let Some(imp) = a.as_import(o.callable) else {
        return false;
    };
    matches!(
        policy.lookup(&imp.module, &imp.name),
        Some(Allow::Call | Allow::Reconstructor)
    )
}

fn check_reconstructor(a: &Analysis<'_>, policy: &Policy, args: ObjId) -> Result<(), String> {
    let t = a
        .as_tuple(args)
        .ok_or("arguments are not a literal tuple")?;
    let [cls, base, _state] = t else {
        return Err(format!("{} arguments instead of 3", t.len()));
    };
    let cls_imp = a
        .as_import(*cls)
        .ok_or("the class is not an imported global")?;
    if !matches!(
        policy.lookup(&cls_imp.module, &cls_imp.name),
        Some(Allow::Call)
    ) {
        return Err(format!(
            "class {} is not on the allowlist",
            cls_imp.qualified()
        ));
    }
    let base_imp = a
        .as_import(*base)
        .ok_or("the base is not an imported global")?;
    const BASES: &[&str] = &[
        "object", "dict", "list", "set", "tuple", "int", "float", "str", "bytes",
    ];
    if base_imp.module != "builtins" || !BASES.contains(&base_imp.name.as_str()) {
        return Err(format!(
            "base {} is not a builtin type",
            base_imp.qualified()
        ));
    }
    Ok(())
}

fn check_codecs_encode(a: &Analysis<'_>, args: ObjId) -> Result<(), String> {
    let t = a
        .as_tuple(args)
        .ok_or("arguments are not a literal tuple")?;
    match t {
        [data, enc] => {
            if !matches!(a.value(*data), Value::Str(_)) {
                return Err("the data is not a string".into());
            }
            let enc = a.as_str(*enc).ok_or("the codec name is not a string")?;
            const OK: &[&str] = &[
                "latin1",
                "latin-1",
                "iso-8859-1",
                "iso8859-1",
                "utf-8",
                "utf8",
                "ascii",
            ];
            if OK.contains(&enc.to_ascii_lowercase().as_str()) {
                Ok(())
            } else {
                Err(format!("codec {enc:?} is not a plain text codec"))
            }
        }
        _ => Err(format!("{} arguments instead of 2", t.len())),
    }
}

/// Every global a stream imports, as sorted unique `module.name` strings (for `--globals` and
/// `add_safe_globals`).
pub fn globals(a: &Analysis<'_>) -> BTreeSet<String> {
    a.imports.iter().map(|i| i.qualified()).collect()
}

/// Imports not on the allowlist, grouped by module (for messages).
pub fn unallowed(a: &Analysis<'_>, policy: &Policy) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in &a.imports {
        if policy.lookup(&i.module, &i.name).is_none() {
            let v = m.entry(i.module.clone()).or_default();
            if !v.contains(&i.name) {
                v.push(i.name.clone());
            }
        }
    }
    m
}
