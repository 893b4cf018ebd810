//! Generates and maps the events of one transaction at a time, on the
//! writer's own thread, between its writes: the writer's clock is stopped
//! while a chunk is made, and nothing else runs on the machine's cores
//! while the baseline writes (a feeding thread working ahead would take
//! CPU from the database itself). Memory stays at one chunk.

use crate::event::Generator;
use crate::rows::{RowMapper, Write};

/// One transaction's worth of writes.
#[derive(Debug)]
pub struct Chunk {
    pub writes: Vec<Write>,
    /// Events it covers (some write nothing).
    pub events: u64,
    /// The stream cursor of its last event (`time_us`).
    pub last_cursor: u64,
}

/// The chunks of events `from..to`, `per_tx` events each.
pub fn chunks(
    generator: &Generator,
    from: u64,
    to: u64,
    per_tx: u64,
) -> impl Iterator<Item = Chunk> + '_ {
    let mapper = RowMapper::new();
    let per_tx = per_tx.max(1);
    (from..to).step_by(per_tx as usize).map(move |i| {
        let end = (i + per_tx).min(to);
        Chunk {
            writes: (i..end)
                .filter_map(|j| mapper.write(&generator.event(j)))
                .collect(),
            events: end - i,
            last_cursor: generator.time_us(end - 1),
        }
    })
}
