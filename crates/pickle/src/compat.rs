//! CPython's Python 2 → 3 name mapping (`Lib/_compat_pickle.py`), applied by `find_class`
//! when the stream's protocol is below 3 (`fix_imports=True`, the default everywhere).

use crate::compat_table::{IMPORT_MAPPING, NAME_MAPPING};

/// Maps `(module, name)` the way `Unpickler.find_class` does for protocol < 3.
/// Returns `None` when the names are unchanged.
pub(crate) fn map_py2(module: &str, name: &str) -> Option<(String, String)> {
    if let Some((_, (m, n))) = NAME_MAPPING
        .iter()
        .find(|((m, n), _)| *m == module && *n == name)
    {
        return Some((m.to_string(), n.to_string()));
    }
    IMPORT_MAPPING
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, m3)| (m3.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_like_cpython() {
        assert_eq!(
            map_py2("__builtin__", "eval"),
            Some(("builtins".into(), "eval".into()))
        );
        assert_eq!(
            map_py2("copy_reg", "_reconstructor"),
            Some(("copyreg".into(), "_reconstructor".into()))
        );
        assert_eq!(
            map_py2("exceptions", "Exception"),
            Some(("builtins".into(), "Exception".into()))
        );
        assert_eq!(
            map_py2("__builtin__", "xrange"),
            Some(("builtins".into(), "range".into()))
        );
        assert_eq!(map_py2("os", "system"), None);
    }
}
