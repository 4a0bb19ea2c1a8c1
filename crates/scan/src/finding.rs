//! Findings: stable codes, severities, and the documentation of each code.

use serde::{Deserialize, Serialize};

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Context, never a failure on its own.
    Info,
    /// Unusual but harmless as far as can be told.
    Low,
    /// Structural anomalies that loaders tolerate; worth a look.
    Medium,
    /// Something that is not known to be safe: a non-allowlisted import or call, a stream that
    /// could not be fully analysed.
    High,
    /// A known code-execution, file, network or import primitive.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    /// Parses a lower-case name.
    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

macro_rules! codes {
    ($( $variant:ident = $id:literal, $slug:literal, $sev:ident, $blocking:literal, $doc:literal ;)*) => {
        /// A stable finding code. `id()` never changes meaning once released.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( #[doc = $doc] $variant, )* }

        impl Code {
            /// Every code, in id order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            /// The stable id, e.g. `CG101`.
            pub fn id(self) -> &'static str { match self { $( Code::$variant => $id, )* } }
            /// The kebab-case name, e.g. `dangerous-call`.
            pub fn slug(self) -> &'static str { match self { $( Code::$variant => $slug, )* } }
            /// Default severity.
            pub fn severity(self) -> Severity { match self { $( Code::$variant => Severity::$sev, )* } }
            /// Whether the file can never be `safe` with this finding, whatever `--fail-on` says
            /// (the file could not be fully analysed, or it runs code by design).
            pub fn blocking(self) -> bool { match self { $( Code::$variant => $blocking, )* } }
            /// What the code means and why it matters.
            pub fn description(self) -> &'static str { match self { $( Code::$variant => $doc, )* } }
            /// Looks a code up by id or slug.
            pub fn parse(s: &str) -> Option<Code> {
                Code::ALL.iter().copied().find(|c| c.id().eq_ignore_ascii_case(s) || c.slug() == s)
            }
        }
    };
}

codes! {
    DangerousCall = "CG101", "dangerous-call", Critical, false,
        "The pickle calls a known code-execution, process, file, network, import or gadget primitive (os.system, eval, subprocess, getattr, ...). Loading the file runs it.";
    DangerousImport = "CG102", "dangerous-import", Critical, false,
        "The pickle imports a known dangerous primitive without calling it directly; it can still be called through another object or opcode.";
    UnknownCall = "CG103", "unknown-call", High, false,
        "The pickle calls something that is not on the allowlist of callables known to only build data. Default-deny: anything not known to be safe is unsafe. If it is your own class and you trust it, add it to ckptguard.toml.";
    UnknownImport = "CG104", "unknown-import", High, false,
        "The pickle imports a module attribute that is not on the allowlist. Importing runs the module's top-level code; default-deny treats it as unsafe.";
    IndirectCall = "CG105", "indirect-call", Critical, false,
        "Something that is not an imported global is called: the result of another call, an extension-registry object or a persistent object. This is how gadget chains (getattr(...)(...)) work.";
    DisallowedBuild = "CG106", "disallowed-build", High, false,
        "BUILD sets state on an object that was not made by an allowlisted constructor (or on a class or module itself), which runs __setstate__ or setattr on it.";
    DisallowedMutation = "CG107", "disallowed-mutation", High, false,
        "APPEND/SETITEM/ADDITEMS on an object that is not a plain list, dict or set calls that object's append/__setitem__/add method.";
    ExtensionCode = "CG108", "extension-code", High, false,
        "EXT1/EXT2/EXT4 imports whatever the loading process registered in copyreg's extension registry; what it resolves to cannot be known from the file.";
    ConstraintViolated = "CG109", "constraint-violated", High, false,
        "An allowlisted callable is used with arguments outside what makes it safe (copyreg._reconstructor of a non-allowlisted class, _codecs.encode with an unusual codec, calling a marker type).";
    DynamicImport = "CG110", "dynamic-import", Critical, false,
        "STACK_GLOBAL takes its module or name from a value computed at load time: the import target is chosen by code in the pickle.";
    PersistentId = "CG111", "persistent-id", Medium, false,
        "The stream uses persistent ids (PERSID/BINPERSID). Plain pickle.load refuses them; loaders that accept them (torch) interpret them, and their structure is checked where the container is known.";
    MalformedPickle = "CG201", "malformed-pickle", High, true,
        "The stream is not a valid pickle where the real unpickler reads it (truncated, an invalid opcode, a memo miss, a stack underflow, a bad frame). Everything before the break was analysed; a stream that cannot be fully analysed is never reported safe.";
    LimitExceeded = "CG202", "limit-exceeded", High, true,
        "A configured analysis limit (opcodes, values, stack, memo, marks, sizes) was reached: the input is hostile or unusually large, and the rest was not analysed.";
    TrailingData = "CG203", "trailing-data", Medium, false,
        "Bytes after the last STOP opcode that are not a pickle. Loaders that read one pickle ignore them; scanners that stop at STOP have been bypassed by pickles placed there, so they were checked.";
    MultiplePickles = "CG204", "multiple-pickles", Info, false,
        "The stream holds several pickles one after another; each was analysed (loaders that call pickle.load repeatedly run them all).";
    NotAPickle = "CG206", "not-a-pickle", Info, false,
        "The file is not a format ckptguard knows and unpickling it would fail before importing or calling anything.";
    ZipUnreadable = "CG301", "zip-unreadable", High, true,
        "The zip container could not be read the way torch reads it (no end-of-central-directory record, truncated central directory, limits exceeded).";
    ZipAnomaly = "CG302", "zip-anomaly", Medium, false,
        "A structural zip anomaly (mismatched local and central headers, bad CRC, prepended or trailing data, unusual flags). torch tolerates these, other readers may see different content; every copy was scanned.";
    ZipAmbiguous = "CG303", "zip-ambiguous-entry", High, false,
        "Duplicate or case-colliding entry names, or overlapping entries: which bytes a loader reads depends on the reader. Every candidate was scanned.";
    ZipEntryUnreadable = "CG304", "zip-entry-unreadable", High, true,
        "A zip entry could not be read (encrypted, unsupported compression, past the end of the file, or over the size/ratio limits), so its content was not analysed.";
    NpyMalformed = "CG305", "npy-malformed", High, true,
        "The .npy header is malformed; numpy would refuse the file, and its body was not analysed as data.";
    NpyObjectArray = "CG306", "npy-object-array", Info, false,
        "The .npy array has an object dtype: its body is a pickle, loaded only with allow_pickle=True. The pickle was analysed.";
    TorchPersistentId = "CG310", "torch-persistent-id", High, false,
        "A persistent id in a torch pickle is not torch's ('storage', <storage class>, key, location, numel) form. torch refuses it, but loaders with their own persistent_load (Lightning's _lazy_load) act on what it names.";
    TorchMissingStorage = "CG311", "torch-missing-storage", Medium, false,
        "A persistent id names a data/<key> record that the archive lacks, or that is smaller than the storage it declares. torch fails to load such a file; it is corrupt or tampered with.";
    TorchScript = "CG312", "torchscript", Critical, true,
        "A TorchScript archive (constants.pkl, code/): loading it with torch.jit.load runs its code, and torch.load(weights_only=True) before torch 2.6 handed such files to torch.jit.load (CVE-2025-32434).";
    LightningInstantiator = "CG313", "lightning-instantiator", Critical, false,
        "hyper_parameters[\"_instantiator\"] names something other than lightning.pytorch.cli.instantiate_module. Lightning imports that dotted path and calls it on load: code execution even when unpickling is safe.";
    TorchLegacyLayout = "CG314", "torch-legacy-layout", High, true,
        "A legacy torch tar member does not follow the layout torch reads (count, argument pickles, raw records), so the rest of it could not be analysed.";
    Unreadable = "CG401", "unreadable", High, true,
        "The file could not be read (permissions, I/O error, a symlink loop).";
    PathEscape = "CG402", "path-escape", Critical, false,
        "A path inside the checkpoint (DCP relative_path, DeepSpeed latest tag, litdata chunk name) points outside the checkpoint directory; the loader joins it unchecked and loads whatever file it reaches.";
    ShippedCode = "CG403", "shipped-code", Medium, false,
        "Executable code (scripts, native libraries) ships with the checkpoint, like DeepSpeed's zero_to_fp32.py. Loading does not run it, but users are told to run it; review it or use your own copy.";
    ContainerMalformed = "CG404", "container-malformed", High, true,
        "The directory container's own structure (DCP .metadata storage_data, litdata index and chunks) could not be followed, so some of its data was not analysed the way the loader reads it.";
    Encrypted = "CG405", "encrypted", High, true,
        "Encrypted data (litdata encrypted chunks) cannot be analysed without the key; it is unverifiable, never safe.";
    SignatureInvalid = "CG501", "signature-invalid", Critical, true,
        "--require-signature: the model has no valid signature from the given key (missing signature file, wrong key, a changed, added or missing file, a malformed bundle). Unsigned or tampered is unsafe whatever the contents.";
    SignatureValid = "CG502", "signature-valid", Info, false,
        "--require-signature: the model's files match a signature made with the given key.";
    ContainerMissingFile = "CG406", "container-missing-file", Medium, false,
        "The container refers to a file it does not contain (a DCP data file, a DeepSpeed tag, a litdata chunk); loading fails there.";
}

/// One finding about one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable id, e.g. `CG101`.
    pub code: String,
    /// Kebab-case name of the code.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// What was found, in one line.
    pub message: String,
    /// Container member the finding is in (`archive/data.pkl`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Byte offset within the member (or the file, when there is no member).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The global involved, as `module.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<String>,
    /// The call, rendered as Python: `os.system("touch x")`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// Why it is dangerous.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Whether this finding alone makes the file unsafe whatever `--fail-on` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocking: bool,
}

impl Finding {
    /// A finding with the code's default severity.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Finding {
            code: code.id().to_string(),
            name: code.slug().to_string(),
            severity: code.severity(),
            message: message.into(),
            entry: None,
            offset: None,
            global: None,
            call: None,
            why: None,
            help: None,
            blocking: code.blocking(),
        }
    }
    /// Sets the container member.
    pub fn entry(mut self, e: impl Into<String>) -> Self {
        self.entry = Some(e.into());
        self
    }
    /// Sets the byte offset.
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
    /// Sets the global.
    pub fn global(mut self, g: impl Into<String>) -> Self {
        self.global = Some(g.into());
        self
    }
    /// Sets the rendered call.
    pub fn call(mut self, c: impl Into<String>) -> Self {
        self.call = Some(c.into());
        self
    }
    /// Sets why it matters.
    pub fn why(mut self, w: impl Into<String>) -> Self {
        self.why = Some(w.into());
        self
    }
    /// Sets what to do.
    pub fn help(mut self, h: impl Into<String>) -> Self {
        self.help = Some(h.into());
        self
    }
    /// Overrides the severity.
    pub fn severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_documented() {
        let ids: HashSet<_> = Code::ALL.iter().map(|c| c.id()).collect();
        let slugs: HashSet<_> = Code::ALL.iter().map(|c| c.slug()).collect();
        assert_eq!(ids.len(), Code::ALL.len());
        assert_eq!(slugs.len(), Code::ALL.len());
        for c in Code::ALL {
            assert!(c.description().len() > 40, "{c:?}");
            assert_eq!(Code::parse(c.id()), Some(*c));
            assert_eq!(Code::parse(c.slug()), Some(*c));
        }
    }

    #[test]
    fn severity_order() {
        assert!(Severity::Critical > Severity::High);
        assert!(Severity::Info < Severity::Low);
        assert_eq!(Severity::parse("medium"), Some(Severity::Medium));
    }
}
