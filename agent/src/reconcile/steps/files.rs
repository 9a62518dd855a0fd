//! Steps `rke2-config` and `server-manifests`: rendered files written only when their
//! content or mode differs.

use crate::reconcile::change::{file_change, Change};
use crate::reconcile::step::Step;
use crate::reconcile::Context;
use crate::rke2::RenderedFile;
use anyhow::Result;

pub struct FilesStep<'a> {
    name: &'static str,
    cx: &'a Context,
    files: Vec<RenderedFile>,
    /// The files `plan` found out of date.
    pub stale: Vec<RenderedFile>,
    planned: Vec<Change>,
}

impl<'a> FilesStep<'a> {
    pub fn new(name: &'static str, cx: &'a Context, files: Vec<RenderedFile>) -> Self {
        FilesStep {
            name,
            cx,
            files,
            stale: Vec::new(),
            planned: Vec::new(),
        }
    }
}

impl Step for FilesStep<'_> {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn plan(&mut self) -> Result<Vec<Change>> {
        self.planned.clear();
        self.stale.clear();
        for file in &self.files {
            if let Some(change) = file_change(
                self.name,
                &self.cx.root,
                &file.path,
                &file.contents,
                file.mode,
            )? {
                self.planned.push(change);
                self.stale.push(file.clone());
            }
        }
        Ok(self.planned.clone())
    }

    async fn apply(&mut self) -> Result<Vec<Change>> {
        for file in &self.stale {
            file.write(&self.cx.root)?;
        }
        Ok(self.planned.clone())
    }

    fn skipped(&self) -> bool {
        self.files.is_empty()
    }
}
