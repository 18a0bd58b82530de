//! The `ModuleLoader` of an isolate: tool modules from an in-memory map, nothing else.
//!
//! The host inserts a [`ToolModule`] (already transpiled) before loading it by its specifier.
//! Tools cannot import anything: every import and dynamic `import()` from a tool fails, and
//! deno_core itself refuses `ext:` modules to non-extension code. `get_source_map` hands
//! deno_core the tool's source map so stack traces point at TypeScript lines.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use deno_core::error::ModuleLoaderError;
use deno_core::{
    ModuleLoadOptions, ModuleLoadReferrer, ModuleLoadResponse, ModuleLoader, ModuleSource,
    ModuleSourceCode, ModuleSpecifier, ModuleType, ResolutionKind,
};
use deno_error::JsErrorBox;

use super::ToolModule;

/// Tool modules known to one isolate, by specifier, plus other source maps (the bootstrap's).
#[derive(Default)]
pub(crate) struct ToolLoader {
    modules: RefCell<HashMap<String, Arc<ToolModule>>>,
    source_maps: RefCell<HashMap<String, Vec<u8>>>,
}

impl ToolLoader {
    /// Makes `module` loadable under its specifier; returns the parsed specifier.
    pub(crate) fn insert(&self, module: Arc<ToolModule>) -> Result<ModuleSpecifier, String> {
        let url = ModuleSpecifier::parse(&module.specifier)
            .map_err(|e| format!("invalid tool specifier '{}': {e}", module.specifier))?;
        if let Some(map) = &module.source_map {
            self.source_maps
                .borrow_mut()
                .insert(url.to_string(), map.clone().into_bytes());
        }
        self.modules.borrow_mut().insert(url.to_string(), module);
        Ok(url)
    }

    /// Registers the source map of a script that is not a tool (the libos bootstrap).
    pub(crate) fn insert_source_map(&self, name: &str, map: String) {
        self.source_maps
            .borrow_mut()
            .insert(name.to_string(), map.into_bytes());
    }
}

fn refuse(specifier: &str) -> ModuleLoaderError {
    JsErrorBox::type_error(format!(
        "tools cannot import modules ('{specifier}'): use the libos argument"
    ))
}

impl ModuleLoader for ToolLoader {
    fn resolve(
        &self,
        specifier: &str,
        referrer: &str,
        kind: ResolutionKind,
    ) -> Result<ModuleSpecifier, ModuleLoaderError> {
        if kind == ResolutionKind::DynamicImport || referrer.starts_with("tool:") {
            return Err(refuse(specifier));
        }
        match ModuleSpecifier::parse(specifier) {
            Ok(url) if self.modules.borrow().contains_key(url.as_str()) => Ok(url),
            _ => Err(refuse(specifier)),
        }
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleLoadReferrer>,
        _options: ModuleLoadOptions,
    ) -> ModuleLoadResponse {
        let found = self.modules.borrow().get(specifier.as_str()).cloned();
        ModuleLoadResponse::Sync(match found {
            Some(module) => Ok(ModuleSource::new(
                ModuleType::JavaScript,
                ModuleSourceCode::String(module.code.clone().into()),
                specifier,
                None,
            )),
            None => Err(refuse(specifier.as_str())),
        })
    }

    fn get_source_map(&self, specifier: &str) -> Option<Cow<'_, [u8]>> {
        self.source_maps
            .borrow()
            .get(specifier)
            .map(|map| Cow::Owned(map.clone()))
    }
}
