//! What a loaded zone holds per name, counted by a test allocator: the bytes still allocated
//! by this thread after a zone file is loaded or a transfer copied.
//!
//! The counter is per thread, so tests running beside each other do not count each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use domain::base::Ttl;
use domain::base::iana::{Class, Rtype};
use domain::base::message_builder::MessageBuilder;

use crate::secondary::{Outcome, Step, Transfer};
use crate::zone::Zone;
use crate::zone::tests::{a, n, soa};

/// The system allocator, counting the bytes this thread holds.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // `try_with`: a thread being torn down frees after its counter is gone.
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every call goes to `System` as it came; the counter allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> isize {
    LIVE.with(|l| l.get())
}

/// Names in each zone: enough that the hash table is most of the way full (3,001 nodes in
/// 4,096 slots).
const NAMES: usize = 3000;

/// Bytes a name of one A record may hold, as asked for (malloc adds its own rounding): 254
/// now, the node 56, room for its one set 32, the set's one `Data` 144, the name's 15 wire
/// bytes, the table's slot 7. It was 417 both ways: a lower-case copy of each name as a key
/// and its map entry (about 40), room for four sets (96 more), a shared header for each name
/// cloned from the records read (24; 278 with only that left, in a transfer).
const MAX_PER_NAME: isize = 270;

#[test]
fn a_zone_file_holds_what_its_names_need() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.test");
    let mut text = String::from(
        "$ORIGIN big.test.\n$TTL 300\n@ IN SOA ns admin 1 3600 600 86400 300\n@ IN NS ns\n",
    );
    for i in 0..NAMES {
        text.push_str(&format!("h{i} IN A 10.0.{}.{}\n", i / 256, i % 256));
    }
    std::fs::write(&path, text).unwrap();
    let before = live();
    let zone = crate::zonefile::load(&path).unwrap();
    let held = live() - before;
    assert_eq!(zone.len(), NAMES + 1);
    let per_name = held / NAMES as isize;
    assert!(per_name <= MAX_PER_NAME, "{per_name} bytes a name");
}

/// One AXFR message: the question (in the first only) and `recs`.
fn axfr_message(first: bool, recs: &[(String, crate::zone::Data)]) -> Vec<u8> {
    let mut mb = MessageBuilder::new_vec();
    let h = mb.header_mut();
    h.set_id(1);
    h.set_qr(true);
    h.set_aa(true);
    let mut qb = mb.question();
    if first {
        qb.push((n("big.test"), Rtype::AXFR, Class::IN)).unwrap();
    }
    let mut ab = qb.answer();
    for (owner, data) in recs {
        ab.push((n(owner), Class::IN, Ttl::from_secs(300), data))
            .unwrap();
    }
    ab.finish()
}

#[test]
fn a_transferred_zone_holds_what_its_names_need() {
    let mut recs = vec![("big.test".to_string(), soa(1))];
    for i in 0..NAMES {
        recs.push((
            format!("h{i}.big.test"),
            a(&format!("10.0.{}.{}", i / 256, i % 256)),
        ));
    }
    recs.push(("big.test".to_string(), soa(1)));
    let msgs: Vec<Vec<u8>> = recs
        .chunks(500)
        .enumerate()
        .map(|(i, c)| axfr_message(i == 0, c))
        .collect();
    drop(recs);
    let before = live();
    let mut t = Transfer::new(n("big.test"), None);
    t.start();
    let mut zone: Option<Zone> = None;
    for (i, m) in msgs.iter().enumerate() {
        match t.message(m) {
            Step::More if i + 1 < msgs.len() => {}
            Step::Done(Outcome::New(z, _)) if i + 1 == msgs.len() => zone = Some(z),
            other => panic!("message {i}: {other:?}"),
        }
    }
    drop(t);
    let held = live() - before;
    let zone = zone.unwrap();
    assert_eq!(zone.len(), NAMES + 1);
    let per_name = held / NAMES as isize;
    assert!(per_name <= MAX_PER_NAME, "{per_name} bytes a name");
}
