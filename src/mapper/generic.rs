//! The generic catch-all mapper: any record of the configured collections
//! goes whole into the `records` table, with its collection.
//!
//! Owns: the `records` table layout (standard columns plus `collection`).
//! The table is created by the migrations. Registered after the built-in and
//! declarative mappers, so it only catches what nothing else maps.

use std::sync::Arc;

use super::table::{ColumnType, TableSchema, Value};
use super::{MapError, Mapper, RecordRef, Registry, RegistryError};
use crate::event::CollectionPattern;

/// The table the generic mapper writes.
pub const TABLE: &str = "records";

/// The `records` table layout.
pub fn schema() -> TableSchema {
    TableSchema::new(TABLE, &[("collection", ColumnType::Text)])
}

struct GenericMapper {
    schema: TableSchema,
}

impl Mapper for GenericMapper {
    fn table(&self) -> &TableSchema {
        &self.schema
    }

    fn map(&self, r: &RecordRef<'_>) -> Result<Vec<Value>, MapError> {
        Ok(vec![Value::Text(r.collection.as_str().to_owned())])
    }
}

/// Registers the catch-all for each pattern (one shared `records` table).
pub fn register(reg: &mut Registry, patterns: &[CollectionPattern]) -> Result<(), RegistryError> {
    let mapper: Arc<dyn Mapper> = Arc::new(GenericMapper { schema: schema() });
    for p in patterns {
        reg.register(p.clone(), mapper.clone())?;
    }
    Ok(())
}
