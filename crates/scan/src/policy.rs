//! Default-deny policy: which imports and calls only build data.
//!
//! A `(module, qualname)` is safe only when it is on the allowlist. Everything else is unsafe;
//! names in the catalogue of known code-execution, file, network and import primitives are
//! additionally `critical`, with the reason.

use std::collections::BTreeSet;

/// How an allowlisted global may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// May be imported and called (classes and functions that only build data).
    Call,
    /// May be imported and passed around, never called (dtype singletons, marker types).
    ImportOnly,
    /// `copyreg._reconstructor(cls, base, state)`: safe only for an allowlisted `cls` and a
    /// builtin `base`.
    Reconstructor,
    /// `_codecs.encode(data, encoding)`: safe only for the text codecs pickle itself uses.
    CodecsEncode,
}

const TORCH_DTYPES: &[&str] = &[
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "short",
    "int32",
    "int",
    "int64",
    "long",
    "bool",
    "quint8",
    "qint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
];

const TORCH_STORAGES: &[&str] = &[
    "DoubleStorage",
    "FloatStorage",
    "HalfStorage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "BFloat16Storage",
    "ComplexDoubleStorage",
    "ComplexFloatStorage",
    "QUInt8Storage",
    "QInt8Storage",
    "QInt32Storage",
    "QUInt4x2Storage",
    "QUInt2x4Storage",
    "UntypedStorage",
];

/// Legacy tensor classes (`torch.FloatTensor`, ...), recorded by torch's legacy tar format.
pub(crate) const TORCH_TENSOR_CLASSES: &[&str] = &[
    "DoubleTensor",
    "FloatTensor",
    "HalfTensor",
    "BFloat16Tensor",
    "LongTensor",
    "IntTensor",
    "ShortTensor",
    "CharTensor",
    "ByteTensor",
    "BoolTensor",
];

const TORCH_REBUILD: &[&str] = &[
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_qtensor",
    "_rebuild_sparse_tensor",
    "_rebuild_meta_tensor_no_storage",
    "_rebuild_wrapper_subclass",
    "_rebuild_device_tensor_from_numpy",
    "_rebuild_device_tensor_from_cpu_tensor",
];

/// The built-in allowlist: torch's weights-only set plus what real Lightning, numpy, DCP and
/// DeepSpeed checkpoints need.
static BUILTIN: &[(&str, &str, Allow)] = &[
    ("collections", "OrderedDict", Allow::Call),
    ("collections", "Counter", Allow::Call),
    ("collections", "defaultdict", Allow::Call),
    ("collections", "deque", Allow::Call),
    ("builtins", "set", Allow::Call),
    ("builtins", "frozenset", Allow::Call),
    ("builtins", "bytearray", Allow::Call),
    ("builtins", "complex", Allow::Call),
    ("builtins", "slice", Allow::Call),
    ("builtins", "range", Allow::Call),
    ("builtins", "object", Allow::ImportOnly),
    ("builtins", "list", Allow::ImportOnly),
    ("builtins", "dict", Allow::ImportOnly),
    ("builtins", "int", Allow::ImportOnly),
    ("builtins", "float", Allow::ImportOnly),
    ("builtins", "str", Allow::ImportOnly),
    ("builtins", "bool", Allow::ImportOnly),
    ("builtins", "tuple", Allow::ImportOnly),
    ("builtins", "bytes", Allow::Call),
    ("builtins", "NoneType", Allow::ImportOnly),
    ("copyreg", "_reconstructor", Allow::Reconstructor),
    ("_codecs", "encode", Allow::CodecsEncode),
    ("codecs", "encode", Allow::CodecsEncode),
    ("datetime", "datetime", Allow::Call),
    ("datetime", "date", Allow::Call),
    ("datetime", "time", Allow::Call),
    ("datetime", "timedelta", Allow::Call),
    ("datetime", "timezone", Allow::Call),
    ("decimal", "Decimal", Allow::Call),
    ("fractions", "Fraction", Allow::Call),
    ("uuid", "UUID", Allow::Call),
    // torch
    ("torch", "Size", Allow::Call),
    ("torch", "Tensor", Allow::Call),
    ("torch", "device", Allow::Call),
    ("torch", "dtype", Allow::ImportOnly),
    ("torch", "layout", Allow::ImportOnly),
    ("torch", "memory_format", Allow::ImportOnly),
    ("torch", "strided", Allow::ImportOnly),
    ("torch", "sparse_coo", Allow::ImportOnly),
    ("torch", "sparse_csr", Allow::ImportOnly),
    ("torch", "sparse_csc", Allow::ImportOnly),
    ("torch", "sparse_bsr", Allow::ImportOnly),
    ("torch", "sparse_bsc", Allow::ImportOnly),
    ("torch", "_mkldnn", Allow::ImportOnly),
    ("torch", "contiguous_format", Allow::ImportOnly),
    ("torch", "channels_last", Allow::ImportOnly),
    ("torch", "channels_last_3d", Allow::ImportOnly),
    ("torch", "preserve_format", Allow::ImportOnly),
    ("torch", "per_tensor_affine", Allow::ImportOnly),
    ("torch", "per_channel_affine", Allow::ImportOnly),
    ("torch", "per_tensor_symmetric", Allow::ImportOnly),
    ("torch", "per_channel_symmetric", Allow::ImportOnly),
    (
        "torch",
        "per_channel_affine_float_qparams",
        Allow::ImportOnly,
    ),
    ("torch.nn.parameter", "Parameter", Allow::Call),
    ("torch.nn.parameter", "Buffer", Allow::Call),
    ("torch.serialization", "_get_layout", Allow::Call),
    ("torch._tensor", "_rebuild_from_type_v2", Allow::Call),
    ("torch.storage", "UntypedStorage", Allow::ImportOnly),
    ("torch.storage", "TypedStorage", Allow::ImportOnly),
    ("torch.storage", "_load_from_bytes", Allow::ImportOnly),
    ("torch.torch_version", "TorchVersion", Allow::Call),
    // Lightning / Fabric hyper-parameters
    ("argparse", "Namespace", Allow::Call),
    ("pathlib", "Path", Allow::Call),
    ("pathlib", "PosixPath", Allow::Call),
    ("pathlib", "WindowsPath", Allow::Call),
    ("pathlib", "PurePath", Allow::Call),
    ("pathlib", "PurePosixPath", Allow::Call),
    ("pathlib", "PureWindowsPath", Allow::Call),
    ("pathlib._local", "Path", Allow::Call),
    ("pathlib._local", "PosixPath", Allow::Call),
    ("pathlib._local", "WindowsPath", Allow::Call),
    ("pathlib._local", "PurePosixPath", Allow::Call),
    ("pathlib._local", "PureWindowsPath", Allow::Call),
    (
        "lightning.fabric.utilities.data",
        "AttributeDict",
        Allow::Call,
    ),
    (
        "lightning_fabric.utilities.data",
        "AttributeDict",
        Allow::Call,
    ),
    (
        "lightning.pytorch.utilities.parsing",
        "AttributeDict",
        Allow::Call,
    ),
    (
        "pytorch_lightning.utilities.parsing",
        "AttributeDict",
        Allow::Call,
    ),
    // numpy (1.x `numpy.core`, 2.x `numpy._core`)
    ("numpy", "ndarray", Allow::ImportOnly),
    ("numpy", "dtype", Allow::Call),
    ("numpy.core.multiarray", "_reconstruct", Allow::Call),
    ("numpy._core.multiarray", "_reconstruct", Allow::Call),
    ("numpy.core.multiarray", "scalar", Allow::Call),
    ("numpy._core.multiarray", "scalar", Allow::Call),
    ("numpy.core.numeric", "_frombuffer", Allow::Call),
    ("numpy._core.numeric", "_frombuffer", Allow::Call),
    // torch.distributed.checkpoint metadata
    (
        "torch.distributed.checkpoint.metadata",
        "Metadata",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "TensorStorageMetadata",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "BytesStorageMetadata",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "ChunkStorageMetadata",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "TensorProperties",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "_MEM_FORMAT_ENCODING",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "MetadataIndex",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.metadata",
        "StorageMeta",
        Allow::Call,
    ),
    (
        "torch.distributed.checkpoint.filesystem",
        "_StorageInfo",
        Allow::Call,
    ),
    // DeepSpeed
    (
        "deepspeed.runtime.zero.config",
        "ZeroStageEnum",
        Allow::Call,
    ),
    (
        "deepspeed.runtime.fp16.loss_scaler",
        "LossScaler",
        Allow::Call,
    ),
    (
        "deepspeed.runtime.fp16.loss_scaler",
        "DynamicLossScaler",
        Allow::Call,
    ),
    (
        "deepspeed.utils.tensor_fragment",
        "fragment_address",
        Allow::Call,
    ),
];

/// Whether `name` is a torch dtype attribute (`float32`, `bfloat16`, `float8_e4m3fn`, ...).
pub fn is_torch_dtype(name: &str) -> bool {
    TORCH_DTYPES.contains(&name)
}

fn numpy_scalar_type(module: &str, name: &str) -> bool {
    const NP: &[&str] = &[
        "bool_",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "longdouble",
        "complex64",
        "complex128",
        "str_",
        "bytes_",
        "datetime64",
        "timedelta64",
        "intc",
        "uintc",
        "longlong",
        "ulonglong",
        "half",
        "single",
        "double",
        "csingle",
        "cdouble",
    ];
    (module == "numpy" && NP.contains(&name))
        || (module == "numpy.dtypes" && name.ends_with("DType") && name.len() < 40)
}

/// The allowlist in force: built-ins plus a project's additions.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    extra: BTreeSet<(String, String)>,
}

impl Policy {
    /// The built-in policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a global (from `ckptguard.toml`): importable and callable.
    pub fn allow(&mut self, module: &str, name: &str) {
        self.extra.insert((module.to_string(), name.to_string()));
    }

    /// How `(module, name)` may be used, or `None` if it is not allowlisted.
    pub fn lookup(&self, module: &str, name: &str) -> Option<Allow> {
        if let Some((_, _, a)) = BUILTIN.iter().find(|(m, n, _)| *m == module && *n == name) {
            return Some(*a);
        }
        if module == "torch" && (TORCH_DTYPES.contains(&name) || TORCH_STORAGES.contains(&name)) {
            return Some(Allow::ImportOnly);
        }
        if module == "torch" && TORCH_TENSOR_CLASSES.contains(&name) {
            return Some(Allow::ImportOnly);
        }
        if module == "torch._utils" && TORCH_REBUILD.contains(&name) {
            return Some(Allow::Call);
        }
        if numpy_scalar_type(module, name) {
            return Some(Allow::ImportOnly);
        }
        // A project may allow its own classes, never a known-dangerous primitive (a config that
        // tries is rejected by `Config::parse`; this is the second line of defence).
        if danger(module, name).is_none()
            && self.extra.contains(&(module.to_string(), name.to_string()))
        {
            return Some(Allow::Call);
        }
        None
    }

    /// Number of globals the project configuration added.
    pub fn extra_len(&self) -> usize {
        self.extra.len()
    }
}

/// Why a known primitive is dangerous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Danger {
    /// Short category: `code execution`, `process`, `file`, ...
    pub category: &'static str,
    /// One sentence on what it lets a pickle do.
    pub why: &'static str,
}

const EXEC: Danger = Danger {
    category: "code execution",
    why: "runs arbitrary Python code",
};
const PROC: Danger = Danger {
    category: "process execution",
    why: "runs operating-system commands or programs",
};
const IMPORT: Danger = Danger {
    category: "dynamic import",
    why: "imports modules or resolves names chosen by the file, reaching any function",
};
const GADGET: Danger = Danger { category: "attribute/call gadget", why: "reaches attributes or calls functions chosen by the file, turning any object into code execution" };
const FILE: Danger = Danger {
    category: "file system",
    why: "reads, writes or deletes files",
};
const NET: Danger = Danger {
    category: "network",
    why: "opens network connections",
};
const NATIVE: Danger = Danger {
    category: "native code",
    why: "loads or calls native code",
};
const NESTED: Danger = Danger {
    category: "nested deserialization",
    why: "deserializes embedded data with another unrestricted loader",
};
const PKG: Danger = Danger {
    category: "package installation",
    why: "installs or runs packages",
};
const INTERP: Danger = Danger {
    category: "interpreter state",
    why: "changes interpreter state, exits, or opens a debugger",
};

/// Modules whose every member is treated as dangerous (prefix match on the dotted path).
static DANGEROUS_MODULES: &[(&str, Danger)] = &[
    ("os", PROC),
    ("posix", PROC),
    ("nt", PROC),
    ("subprocess", PROC),
    ("_posixsubprocess", PROC),
    ("pty", PROC),
    ("commands", PROC),
    ("popen2", PROC),
    ("multiprocessing", PROC),
    ("concurrent", PROC),
    ("asyncio", PROC),
    ("_winapi", PROC),
    ("signal", INTERP),
    ("runpy", EXEC),
    ("code", EXEC),
    ("codeop", EXEC),
    ("timeit", EXEC),
    ("profile", EXEC),
    ("cProfile", EXEC),
    ("_lsprof", EXEC),
    ("pdb", EXEC),
    ("bdb", EXEC),
    ("trace", EXEC),
    ("doctest", EXEC),
    ("idlelib", EXEC),
    ("IPython", EXEC),
    ("ipykernel", EXEC),
    ("jupyter_client", EXEC),
    ("unittest", EXEC),
    ("test", EXEC),
    ("venv", PKG),
    ("numpy.testing", EXEC),
    ("numpy.f2py", EXEC),
    ("numpy.distutils", PKG),
    ("numpy.ctypeslib", NATIVE),
    ("numpy.lib.npyio", NESTED),
    ("numpy.load", NESTED),
    ("torch._inductor", EXEC),
    ("torch.jit", EXEC),
    ("torch._dynamo", EXEC),
    ("torch.utils.cpp_extension", EXEC),
    ("torch.hub", NESTED),
    ("torch.package", NESTED),
    ("torch.serialization", NESTED),
    ("torch._ops", NATIVE),
    ("torch.ops", NATIVE),
    ("torch.fx", EXEC),
    ("torch.export", EXEC),
    ("torch.compiler", EXEC),
    ("torch.utils.data", FILE),
    ("torch.multiprocessing", PROC),
    ("torch.distributed.rpc", NET),
    ("importlib", IMPORT),
    ("pkgutil", IMPORT),
    ("pydoc", IMPORT),
    ("inspect", GADGET),
    ("imp", IMPORT),
    ("zipimport", IMPORT),
    ("_imp", IMPORT),
    ("_frozen_importlib", IMPORT),
    ("_frozen_importlib_external", IMPORT),
    ("sys", INTERP),
    ("site", IMPORT),
    ("operator", GADGET),
    ("_operator", GADGET),
    ("functools", GADGET),
    ("_functools", GADGET),
    ("itertools", GADGET),
    ("types", GADGET),
    ("ast", EXEC),
    ("dis", GADGET),
    ("gc", INTERP),
    ("weakref", GADGET),
    ("ctypes", NATIVE),
    ("_ctypes", NATIVE),
    ("cffi", NATIVE),
    ("_cffi_backend", NATIVE),
    ("mmap", FILE),
    ("io", FILE),
    ("_io", FILE),
    ("_pyio", FILE),
    ("shutil", FILE),
    ("tempfile", FILE),
    ("glob", FILE),
    ("fileinput", FILE),
    ("tarfile", FILE),
    ("zipfile", FILE),
    ("gzip", FILE),
    ("bz2", FILE),
    ("lzma", FILE),
    ("sqlite3", FILE),
    ("dbm", FILE),
    ("shelve", NESTED),
    ("logging", FILE),
    ("filecmp", FILE),
    ("linecache", FILE),
    ("tokenize", FILE),
    ("socket", NET),
    ("_socket", NET),
    ("ssl", NET),
    ("urllib", NET),
    ("urllib2", NET),
    ("http", NET),
    ("httplib", NET),
    ("ftplib", NET),
    ("smtplib", NET),
    ("poplib", NET),
    ("imaplib", NET),
    ("telnetlib", NET),
    ("xmlrpc", NET),
    ("webbrowser", PROC),
    ("requests", NET),
    ("httpx", NET),
    ("aiohttp", NET),
    ("urllib3", NET),
    ("paramiko", NET),
    ("socketserver", NET),
    ("fsspec", NET),
    ("smart_open", NET),
    ("pickle", NESTED),
    ("_pickle", NESTED),
    ("cPickle", NESTED),
    ("pickletools", NESTED),
    ("marshal", NESTED),
    ("dill", NESTED),
    ("cloudpickle", NESTED),
    ("joblib", NESTED),
    ("jsonpickle", NESTED),
    ("yaml", NESTED),
    ("ruamel", NESTED),
    ("copyreg", GADGET),
    ("copy_reg", GADGET),
    ("copy", GADGET),
    ("pip", PKG),
    ("setuptools", PKG),
    ("distutils", PKG),
    ("ensurepip", PKG),
    ("pkg_resources", IMPORT),
    ("builtins", GADGET),
    ("__builtin__", GADGET),
    ("threading", PROC),
    ("_thread", PROC),
    ("atexit", INTERP),
    ("faulthandler", INTERP),
    ("resource", INTERP),
    ("ctypes.util", NATIVE),
    ("platform", PROC),
    ("lightning.pytorch.cli", IMPORT),
    ("jsonargparse", IMPORT),
    ("hydra", IMPORT),
];

/// Individual names that are dangerous although their module is not wholly so (or where a
/// sharper reason helps).
static DANGEROUS_NAMES: &[(&str, &str, Danger)] = &[
    ("builtins", "eval", EXEC),
    ("builtins", "exec", EXEC),
    ("builtins", "compile", EXEC),
    ("builtins", "__import__", IMPORT),
    ("builtins", "getattr", GADGET),
    ("builtins", "setattr", GADGET),
    ("builtins", "delattr", GADGET),
    ("builtins", "open", FILE),
    ("builtins", "breakpoint", INTERP),
    ("builtins", "input", INTERP),
    ("builtins", "exit", INTERP),
    ("builtins", "quit", INTERP),
    ("builtins", "help", IMPORT),
    ("builtins", "globals", GADGET),
    ("builtins", "locals", GADGET),
    ("builtins", "vars", GADGET),
    ("builtins", "type", GADGET),
    ("builtins", "super", GADGET),
    ("builtins", "memoryview", GADGET),
    ("torch", "load", NESTED),
    ("torch", "_load_global_deps", NATIVE),
    ("torch", "save", FILE),
    ("torch", "from_file", FILE),
    ("torch", "jit", EXEC),
    ("torch", "compile", EXEC),
    ("numpy", "load", NESTED),
    ("numpy", "loadtxt", FILE),
    ("numpy", "fromfile", FILE),
    ("numpy", "memmap", FILE),
    ("numpy", "save", FILE),
    ("numpy", "savetxt", FILE),
    ("codecs", "open", FILE),
    ("codecs", "decode", GADGET),
    ("_codecs", "decode", GADGET),
    ("pathlib", "Path.touch", FILE),
    ("pathlib", "Path.write_text", FILE),
    ("pathlib", "Path.write_bytes", FILE),
    ("pathlib", "Path.open", FILE),
    ("pathlib", "Path.unlink", FILE),
    ("pathlib", "Path.rmdir", FILE),
    ("pathlib", "Path.mkdir", FILE),
    ("pathlib", "Path.rename", FILE),
    ("pathlib", "Path.read_text", FILE),
    ("pathlib", "Path.read_bytes", FILE),
];

/// Classifies a global as a known dangerous primitive.
pub fn danger(module: &str, name: &str) -> Option<Danger> {
    if let Some((_, _, d)) = DANGEROUS_NAMES
        .iter()
        .find(|(m, n, _)| *m == module && *n == name)
    {
        return Some(*d);
    }
    // Dotted qualnames reach attributes of attributes: `Path.touch`, `Popen.__init__`.
    if let Some((head, _)) = name.split_once('.') {
        if module == "pathlib" || module == "builtins" || module == "torch" || module == "numpy" {
            return Some(match danger(module, head) {
                Some(d) => d,
                None => GADGET,
            });
        }
    }
    DANGEROUS_MODULES
        .iter()
        .find(|(m, _)| module == *m || module.strip_prefix(m).is_some_and(|r| r.starts_with('.')))
        .map(|(_, d)| *d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_and_danger_do_not_overlap_on_call() {
        let p = Policy::new();
        for (m, n, a) in BUILTIN {
            if *a == Allow::Call {
                let d = danger(m, n);
                // Allowlisted builtins live in the dangerous `builtins` module; allowlisted entries
                // win, but nothing callable may be a named danger.
                assert!(
                    !DANGEROUS_NAMES.iter().any(|(dm, dn, _)| dm == m && dn == n),
                    "{m}.{n} is both allowed and named dangerous ({d:?})"
                );
            }
            assert!(p.lookup(m, n).is_some());
        }
    }

    #[test]
    fn classic_payloads_are_dangerous() {
        for (m, n) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("subprocess", "Popen"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("pkgutil", "resolve_name"),
            ("pydoc", "locate"),
            ("inspect", "getattr_static"),
            ("functools", "partial"),
            ("_operator", "methodcaller"),
            ("operator", "attrgetter"),
            ("runpy", "_run_code"),
            ("timeit", "timeit"),
            ("cProfile", "run"),
            ("numpy.testing._private.utils", "runstring"),
            ("asyncio.unix_events", "x"),
            ("logging", "FileHandler"),
            ("_io", "FileIO"),
            ("codecs", "open"),
            ("shutil", "copy"),
            ("ctypes", "CDLL"),
            ("torch.serialization", "load"),
            ("torch", "load"),
            ("torch._inductor.codecache", "compile_file"),
            ("pathlib", "Path.touch"),
            ("pip", "main"),
            ("importlib", "import_module"),
            ("pickle", "loads"),
            ("webbrowser", "open"),
            ("socket", "socket"),
            ("os.path", "join"),
        ] {
            assert!(danger(m, n).is_some(), "{m}.{n}");
        }
        assert!(danger("collections", "OrderedDict").is_none());
        assert!(danger("torch._utils", "_rebuild_tensor_v2").is_none());
        assert!(danger("ossomething", "x").is_none());
    }

    #[test]
    fn lookups() {
        let mut p = Policy::new();
        assert_eq!(p.lookup("torch", "float32"), Some(Allow::ImportOnly));
        assert_eq!(p.lookup("torch", "FloatStorage"), Some(Allow::ImportOnly));
        assert_eq!(
            p.lookup("torch._utils", "_rebuild_tensor_v2"),
            Some(Allow::Call)
        );
        assert_eq!(
            p.lookup("numpy.dtypes", "Float64DType"),
            Some(Allow::ImportOnly)
        );
        assert_eq!(p.lookup("mymodel", "Net"), None);
        p.allow("mymodel", "Net");
        assert_eq!(p.lookup("mymodel", "Net"), Some(Allow::Call));
    }
}
