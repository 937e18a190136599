//! The zone store: a zone's names, each with its record sets, keyed by lower-case wire name.
//!
//! Every ancestor of an owner up to the apex is a node too (an empty non-terminal has no
//! record sets), so "the name exists" is one map look-up and the closest encloser of a missing
//! name is its nearest suffix in the map (RFC 4592).

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use domain::base::RecordData;
use domain::base::iana::Rtype;
use domain::rdata::ZoneRecordData;

use crate::name::{self, Dname};

/// Record data with owned names.
pub type Data = ZoneRecordData<bytes::Bytes, Dname>;

/// The records of one name and type, with one TTL (RFC 2181 5.2: the lowest one given).
#[derive(Clone, Debug)]
pub struct Rrset {
    pub rtype: Rtype,
    pub ttl: u32,
    pub data: Vec<Data>,
}

/// One name of a zone.
#[derive(Clone, Debug)]
pub struct Node {
    /// The owner as the zone file wrote it (answers carry it).
    pub name: Dname,
    pub rrsets: Vec<Rrset>,
}

impl Node {
    pub fn get(&self, rtype: Rtype) -> Option<&Rrset> {
        self.rrsets.iter().find(|r| r.rtype == rtype)
    }
}

/// What is wrong with a zone's content as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneError {
    OutOfZone(String),
    NoSoa,
    CnameAndOther(String),
    /// More than one CNAME or DNAME record at a name (RFC 2181 10.1: an alias has one
    /// target; RFC 6672 2.4: one DNAME per owner).
    TwoOf(String, Rtype),
}

impl ZoneError {
    /// The name the error is about, when it is about one.
    pub fn owner(&self) -> Option<&str> {
        match self {
            ZoneError::OutOfZone(n) | ZoneError::CnameAndOther(n) | ZoneError::TwoOf(n, _) => {
                Some(n)
            }
            ZoneError::NoSoa => None,
        }
    }
}

impl std::fmt::Display for ZoneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZoneError::OutOfZone(n) => write!(f, "{n} is outside the zone"),
            ZoneError::NoSoa => write!(f, "no SOA record at the zone's apex"),
            ZoneError::CnameAndOther(n) => write!(f, "{n} has a CNAME and other data"),
            ZoneError::TwoOf(n, t) => write!(f, "{n} has more than one {t} record"),
        }
    }
}

/// One zone: an apex with its SOA, and every name below it down to the zone cuts.
#[derive(Clone, Debug)]
pub struct Zone {
    pub apex: Dname,
    apex_key: Box<[u8]>,
    /// Each name's place in `list`, hashed by its key; a slot is matched by comparing its
    /// node's own name ignoring case, so no name is copied as a key (a map keyed by a
    /// lower-case copy of each name cost 65 of the 488 bytes a name took).
    index: HashTable<u32>,
    hasher: RandomState,
    /// The names in the order they were added, the apex first: a transfer served walks them
    /// by position, so it can stop when its client's output is full and go on later (a map's
    /// iteration cannot be resumed).
    list: Vec<Node>,
    /// Some node holds a DNAME: only then does a lookup look for one on its way down (a
    /// map look-up more per answer, which zones without DNAME need not pay).
    dnames: bool,
}

impl Zone {
    /// An empty zone at `apex`.
    pub fn new(apex: Dname) -> Zone {
        let apex_key = name::key(&apex);
        let mut zone = Zone {
            apex: apex.clone(),
            apex_key,
            index: HashTable::new(),
            hasher: RandomState::new(),
            list: Vec::new(),
            dnames: false,
        };
        zone.add_node(apex);
        zone
    }

    /// The hash of a key (a node's name hashes as its key does: the same bytes, lowered).
    fn hash_of(hasher: &RandomState, key: &[u8]) -> u64 {
        hasher.hash_one(key)
    }

    /// The hash of a name as written: its key's hash, the name lowered on the stack.
    fn hash_name(hasher: &RandomState, name: &Dname) -> u64 {
        let wire = name.as_slice();
        let mut low = [0u8; name::MAX_NAME];
        let low = &mut low[..wire.len()];
        low.copy_from_slice(wire);
        low.make_ascii_lowercase();
        Zone::hash_of(hasher, low)
    }

    /// The place in `list` of the node whose key is `key`.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let list = &self.list;
        self.index
            .find(Zone::hash_of(&self.hasher, key), |&i| {
                list[i as usize].name.as_slice().eq_ignore_ascii_case(key)
            })
            .map(|&i| i as usize)
    }

    pub fn apex_key(&self) -> &[u8] {
        &self.apex_key
    }

    /// True if a DNAME was put in the zone.
    pub fn has_dname(&self) -> bool {
        self.dnames
    }

    /// Adds one record. A second SOA replaces the first; record sets keep the lowest TTL.
    pub fn insert(&mut self, owner: Dname, ttl: u32, data: Data) -> Result<(), ZoneError> {
        let key = name::key(&owner);
        if !name::is_within(&key, &self.apex_key) {
            return Err(ZoneError::OutOfZone(owner.to_string()));
        }
        let rtype = data.rtype();
        self.dnames |= rtype == Rtype::DNAME;
        // The owner and every ancestor up to the apex exist, and nothing above the apex: the
        // walk stops at the apex, not at the first node (above the apex there is none).
        // (`key` is within the apex: its suffixes longer than the apex are below it.)
        let apex_len = self.apex_key.len();
        for k in name::suffixes(&key)
            .take_while(|k| k.len() > apex_len)
            .skip(1)
        {
            if self.find(k).is_some() {
                break;
            }
            if let Some(n) = name::from_key(k) {
                self.add_node(n);
            }
        }
        let at = match self.find(&key) {
            Some(at) => at,
            None => self.add_node(owner),
        };
        let node = &mut self.list[at];
        match node.rrsets.iter_mut().find(|r| r.rtype == rtype) {
            Some(set) if rtype == Rtype::SOA => {
                set.ttl = ttl;
                set.data = vec![data];
            }
            Some(set) => {
                set.ttl = set.ttl.min(ttl);
                // Duplicates are dropped by `check`, in one pass: looking for each here would
                // cost the square of a set's size (a transfer may hold huge sets).
                set.data.push(data);
            }
            None => {
                // Room for one set at first (a `Vec`'s first push makes room for four, 128
                // bytes, and most names hold one set); shrunk after, the room stays taken.
                // Only the first: from the second set on the list grows by doubling, not by
                // one reallocation per type.
                if node.rrsets.is_empty() {
                    node.rrsets.reserve_exact(1);
                }
                node.rrsets.push(Rrset {
                    rtype,
                    ttl,
                    data: vec![data],
                });
            }
        }
        Ok(())
    }

    /// A new empty node (its name not in the zone yet); its place in `list`.
    fn add_node(&mut self, name: Dname) -> usize {
        let at = self.list.len();
        let hash = Zone::hash_name(&self.hasher, &name);
        self.list.push(Node {
            name,
            rrsets: Vec::new(),
        });
        let (list, hasher) = (&self.list, &self.hasher);
        // A zone of 4 billion names does not load (a transfer or a file that big is cut off
        // long before), so a place fits in 32 bits.
        let at32 = u32::try_from(at).expect("under 2^32 names");
        self.index.insert_unique(hash, at32, |&i| {
            Zone::hash_name(hasher, &list[i as usize].name)
        });
        at
    }

    /// Drops duplicate records (the first of each stays, in order), then checks the whole:
    /// an SOA at the apex; one DNAME record at most at a name (BIND's "multiple RRs of
    /// singleton type"); one CNAME record at most at a name, and beside it only the
    /// DNSSEC records that sign it and chain past it, RRSIG and NSEC (RFC 2181 10.1, RFC 4035
    /// 2.5; NSEC3 sits at hashed owners, not beside a CNAME), and RFC 2535's SIG and KEY, as
    /// BIND 9.18 allows them (not NXT, which it refuses). Called once all the records are in.
    pub fn check(&mut self) -> Result<(), ZoneError> {
        // The names are all in: the list's growth slack (up to as much again) goes.
        self.list.shrink_to_fit();
        self.index
            .shrink_to_fit(|&i| Zone::hash_name(&self.hasher, &self.list[i as usize].name));
        for node in &mut self.list {
            for set in node.rrsets.iter_mut().filter(|s| s.data.len() > 1) {
                let mut seen = std::collections::HashSet::with_capacity(set.data.len());
                set.data.retain(|d| seen.insert(d.clone()));
                set.data.shrink_to_fit();
            }
        }
        if self.soa().is_none() {
            return Err(ZoneError::NoSoa);
        }
        for node in &self.list {
            if node.get(Rtype::DNAME).is_some_and(|d| d.data.len() > 1) {
                return Err(ZoneError::TwoOf(node.name.to_string(), Rtype::DNAME));
            }
            let Some(cname) = node.get(Rtype::CNAME) else {
                continue;
            };
            if cname.data.len() > 1 {
                return Err(ZoneError::TwoOf(node.name.to_string(), Rtype::CNAME));
            }
            let beside = |t: Rtype| {
                matches!(
                    t,
                    Rtype::CNAME | Rtype::RRSIG | Rtype::NSEC | Rtype::SIG | Rtype::KEY
                )
            };
            if !node.rrsets.iter().all(|s| beside(s.rtype)) {
                return Err(ZoneError::CnameAndOther(node.name.to_string()));
            }
        }
        Ok(())
    }

    pub fn node(&self, key: &[u8]) -> Option<&Node> {
        self.list.get(self.find(key)?)
    }

    /// The `i`th node in the order of `nodes`.
    pub fn node_at(&self, i: usize) -> Option<&Node> {
        self.list.get(i)
    }

    /// The apex's SOA record set.
    pub fn soa(&self) -> Option<&Rrset> {
        self.list.first()?.get(Rtype::SOA)
    }

    /// The SOA's serial, refresh, retry, expire and minimum.
    pub fn soa_timers(&self) -> Option<SoaTimers> {
        match self.soa()?.data.first()? {
            ZoneRecordData::Soa(s) => Some(SoaTimers {
                serial: s.serial().into_int(),
                refresh: s.refresh().as_secs(),
                retry: s.retry().as_secs(),
                expire: s.expire().as_secs(),
                minimum: s.minimum().as_secs(),
            }),
            _ => None,
        }
    }

    /// Names in the zone, empty non-terminals included.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every node, the apex first, then in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.list.iter()
    }
}

/// The SOA's numbers (RFC 1035 3.3.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoaTimers {
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::str::FromStr;

    pub(crate) fn n(s: &str) -> Dname {
        name::parse(s).unwrap()
    }

    pub(crate) fn a(ip: &str) -> Data {
        ZoneRecordData::A(domain::rdata::A::from_str(ip).unwrap())
    }

    /// An SOA (refresh and retry 1 s, expire 100 s, minimum 60 s).
    pub(crate) fn soa(serial: u32) -> Data {
        use domain::base::{Serial, Ttl};
        ZoneRecordData::Soa(domain::rdata::Soa::new(
            n("ns1.example.com"),
            n("hostmaster.example.com"),
            Serial(serial),
            Ttl::from_secs(1),
            Ttl::from_secs(1),
            Ttl::from_secs(100),
            Ttl::from_secs(60),
        ))
    }

    /// Every node of `z`, by name, sorted.
    pub(crate) fn names(z: &Zone) -> Vec<String> {
        let mut v: Vec<String> = z.nodes().map(|n| n.name.to_string()).collect();
        v.sort();
        v
    }

    /// The apex's own records make no node above the apex. They did: the walk that makes an
    /// owner's ancestors stopped at the first node already there, and above the apex there
    /// is none, so every zone held an empty node for each ancestor of its apex up to the
    /// root (`com` and `.` here), counted in the names the log reports.
    #[test]
    fn nothing_above_the_apex() {
        let mut z = Zone::new(n("example.com"));
        z.insert(n("Example.COM"), 60, soa(1)).unwrap();
        z.insert(n("example.com"), 60, a("192.0.2.1")).unwrap();
        z.insert(n("a.b.example.com"), 60, a("192.0.2.2")).unwrap();
        z.check().unwrap();
        assert_eq!(
            names(&z),
            ["a.b.example.com", "b.example.com", "example.com"]
        );
        assert_eq!(z.len(), 3);
        for above in ["com", ""] {
            assert!(z.node(&name::key(&n(above))).is_none(), "{above:?}");
        }
    }

    /// The types held per name keep their size: with 200,000 one-address names the zone
    /// held 488 bytes a name of RssAnon, then 302 (a 144-byte `Data` and the node are most
    /// of it), so a field added to one of these shows here first.
    #[test]
    fn per_name_sizes() {
        use std::mem::size_of;
        assert!(size_of::<Node>() <= 56, "Node: {}", size_of::<Node>());
        assert!(size_of::<Rrset>() <= 32, "Rrset: {}", size_of::<Rrset>());
        assert!(size_of::<Data>() <= 144, "Data: {}", size_of::<Data>());
        assert!(size_of::<Dname>() <= 32, "Dname: {}", size_of::<Dname>());
    }

    /// A name with one set holds room for one set and a set of one record room for one
    /// record: a `Vec`'s first push made room for four sets, 96 bytes a name never used.
    /// Names are found whatever their case, and keep the case they were added with.
    #[test]
    fn names_hold_what_they_use() {
        let mut z = Zone::new(n("example.com"));
        z.insert(n("example.com"), 60, soa(1)).unwrap();
        for i in 0..50 {
            z.insert(n(&format!("H{i}.Sub.example.com")), 60, a("192.0.2.1"))
                .unwrap();
        }
        z.insert(n("h0.sub.example.com"), 60, a("192.0.2.2"))
            .unwrap();
        z.check().unwrap();
        assert_eq!(z.len(), 52);
        for node in z.nodes() {
            assert_eq!(node.rrsets.capacity(), node.rrsets.len(), "{}", node.name);
            for set in &node.rrsets {
                assert_eq!(set.data.capacity(), set.data.len(), "{}", node.name);
            }
        }
        for i in 0..50 {
            let node = z.node(&name::key(&n(&format!("h{i}.sub.example.com"))));
            let node = node.unwrap();
            assert_eq!(node.name.to_string(), format!("H{i}.Sub.example.com"));
            let want = if i == 0 { 2 } else { 1 };
            assert_eq!(node.rrsets[0].data.len(), want);
        }
        assert!(z.node(&name::key(&n("sub.example.com"))).is_some());
        assert!(z.node(&name::key(&n("h50.sub.example.com"))).is_none());
    }

    /// A name of many types grows its list of sets by doubling: reserving room for exactly
    /// one more at each new type (meant for the first alone) made 20,000 types at one name
    /// 20,000 reallocations, each a copy of the list (1.5 s in a debug build).
    #[test]
    fn a_name_of_many_types_grows_its_sets_by_doubling() {
        let mut z = Zone::new(n("example.com"));
        z.insert(n("example.com"), 60, soa(1)).unwrap();
        for t in 0..5u16 {
            let data = domain::base::rdata::UnknownRecordData::from_octets(
                Rtype::from_int(65280 + t),
                bytes::Bytes::from_static(b"x"),
            )
            .map(Data::Unknown)
            .unwrap();
            z.insert(n("many.example.com"), 60, data).unwrap();
        }
        let node = z.node(&name::key(&n("many.example.com"))).unwrap();
        assert_eq!(node.rrsets.len(), 5);
        assert!(
            node.rrsets.capacity() > 5,
            "grown one at a time: capacity {}",
            node.rrsets.capacity()
        );
    }

    #[test]
    fn ancestors_exist_and_sets_merge() {
        let mut z = Zone::new(n("example.com"));
        z.insert(n("a.b.c.example.com"), 60, a("192.0.2.1"))
            .unwrap();
        z.insert(n("A.b.c.example.com"), 30, a("192.0.2.2"))
            .unwrap();
        z.insert(n("a.b.c.example.com"), 90, a("192.0.2.1"))
            .unwrap();
        let _ = z.check();
        let k = name::key(&n("a.b.c.example.com"));
        let node = z.node(&k).unwrap();
        assert_eq!(node.rrsets.len(), 1);
        assert_eq!(node.rrsets[0].ttl, 30);
        assert_eq!(node.rrsets[0].data.len(), 2, "the duplicate is dropped");
        assert!(
            z.node(&name::key(&n("b.c.example.com")))
                .unwrap()
                .rrsets
                .is_empty()
        );
        assert!(z.node(&name::key(&n("c.example.com"))).is_some());
        assert_eq!(
            z.insert(n("example.org"), 60, a("192.0.2.1")),
            Err(ZoneError::OutOfZone("example.org".into()))
        );
        assert_eq!(z.check(), Err(ZoneError::NoSoa));
    }
}
