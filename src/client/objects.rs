//! Views of objects in the mapped store segment: read-only views from `get` (released
//! when dropped) and the writable buffer of a created, unsealed object.

use crate::ids::ObjectId;
use crate::local::codec::ObjectSpec;
use crate::store::buffer::Segment;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// Releases queued by dropped views, sent before the client's next request.
#[derive(Debug, Default, Clone)]
pub(crate) struct Releases(Rc<RefCell<BTreeMap<usize, Vec<ObjectId>>>>);

impl Releases {
    pub(crate) fn push(&self, shard: usize, id: ObjectId) {
        self.0.borrow_mut().entry(shard).or_default().push(id);
    }

    pub(crate) fn take(&self) -> BTreeMap<usize, Vec<ObjectId>> {
        std::mem::take(&mut *self.0.borrow_mut())
    }
}

/// A sealed object, read in place. Holds a reference on the raylet until dropped.
#[derive(Debug)]
pub struct ObjectView {
    seg: Arc<Segment>,
    spec: ObjectSpec,
    shard: usize,
    releases: Releases,
}

impl ObjectView {
    pub(crate) fn new(
        seg: Arc<Segment>,
        spec: ObjectSpec,
        shard: usize,
        releases: Releases,
    ) -> Result<Self, super::ClientError> {
        // Validate the range once, so `data()` cannot fail later.
        seg.bytes(spec.offset, spec.data_size + spec.metadata_size)?;
        Ok(Self { seg, spec, shard, releases })
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.spec.id
    }

    /// The data bytes.
    pub fn data(&self) -> &[u8] {
        self.seg.bytes(self.spec.offset, self.spec.data_size).unwrap_or(&[])
    }

    /// The metadata bytes.
    pub fn metadata(&self) -> &[u8] {
        self.seg.bytes(self.spec.offset + self.spec.data_size, self.spec.metadata_size).unwrap_or(&[])
    }
}

impl std::ops::Deref for ObjectView {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for ObjectView {
    fn drop(&mut self) {
        self.releases.push(self.shard, self.spec.id);
    }
}

/// The writable buffer of an object this client created. Seal or abort it through the
/// client.
#[derive(Debug)]
pub struct ObjectWriter {
    seg: Arc<Segment>,
    spec: ObjectSpec,
}

impl ObjectWriter {
    pub(crate) fn new(seg: Arc<Segment>, spec: ObjectSpec, _shard: usize) -> Result<Self, super::ClientError> {
        seg.bytes(spec.offset, spec.data_size + spec.metadata_size)?;
        Ok(Self { seg, spec })
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.spec.id
    }

    /// The data bytes to fill.
    pub fn data_mut(&mut self) -> &mut [u8] {
        self.seg.bytes_mut(self.spec.offset, self.spec.data_size).unwrap_or(&mut [])
    }

    /// The metadata bytes to fill.
    pub fn metadata_mut(&mut self) -> &mut [u8] {
        self.seg.bytes_mut(self.spec.offset + self.spec.data_size, self.spec.metadata_size).unwrap_or(&mut [])
    }
}
