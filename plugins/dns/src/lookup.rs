//! Authoritative answers as a pure function of (the zones, the question): RFC 1034 4.3.2
//! with RFC 4592's wildcards, RFC 2308's negative answers, RFC 6604's CNAME chains and
//! RFC 6672's DNAME substitution.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use domain::base::iana::{Rcode, Rtype};
use domain::rdata::ZoneRecordData;

use crate::hosts::Hosts;
use crate::name::{self, Dname};
use crate::zone::{Data, Node, Rrset, Zone};

/// CNAMEs (and DNAMEs) followed at most in one answer (BIND follows 16). A loop ends
/// sooner, at the first name met twice.
const MAX_CHAIN: usize = 8;

/// One record set in an answer, under the owner it is answered with (a wildcard's records
/// carry the name asked for). The data is the zone's, or owned for a CNAME synthesised from
/// a DNAME.
#[derive(Clone, Debug)]
pub struct Rr<'a> {
    pub owner: Dname,
    pub ttl: u32,
    pub rtype: Rtype,
    pub data: Cow<'a, [Data]>,
}

impl<'a> Rr<'a> {
    pub(crate) fn of(owner: &Dname, set: &'a Rrset) -> Rr<'a> {
        Rr {
            owner: owner.clone(),
            ttl: set.ttl,
            rtype: set.rtype,
            data: Cow::Borrowed(&set.data),
        }
    }
}

/// An answer's sections, before they are put on the wire.
#[derive(Debug)]
pub struct Answer<'a> {
    pub rcode: Rcode,
    pub aa: bool,
    pub answer: Vec<Rr<'a>>,
    pub authority: Vec<Rr<'a>>,
    pub additional: Vec<Rr<'a>>,
    /// The first this many additional sets are glue a referral needs (RFC 9471): if they do
    /// not fit, the answer is truncated; the rest is dropped quietly when space runs out.
    pub required_glue: usize,
    /// A referral: the name (or the target its CNAME chain ends at) is below a delegation,
    /// and the NS set in the authority section is the child zone's.
    pub delegation: bool,
}

impl Default for Answer<'_> {
    fn default() -> Self {
        Answer {
            rcode: Rcode::NOERROR,
            aa: false,
            answer: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            required_glue: 0,
            delegation: false,
        }
    }
}

/// What the zones and the hosts file say about a question.
#[derive(Debug)]
pub enum Found<'a> {
    Answer(Answer<'a>),
    /// A secondary zone that has no copy yet: SERVFAIL.
    Pending,
    /// Not ours: forward it, or refuse.
    NotOurs,
}

/// Every zone served and the hosts file: what a SIGHUP or a zone transfer replaces whole.
#[derive(Default, Clone)]
pub struct Store {
    zones: HashMap<Box<[u8]>, Rc<Zone>>,
    /// Apexes of secondary zones still waiting for their first transfer.
    pending: HashSet<Box<[u8]>>,
    pub hosts: Option<Rc<Hosts>>,
}

impl Store {
    pub fn add_zone(&mut self, zone: Rc<Zone>) {
        self.pending.remove(zone.apex_key());
        self.zones.insert(zone.apex_key().into(), zone);
    }

    pub fn add_pending(&mut self, apex: &Dname) {
        let k = name::key(apex);
        if !self.zones.contains_key(&k) {
            self.pending.insert(k);
        }
    }

    /// The zone whose apex is exactly `key` (AXFR).
    pub fn zone_at(&self, key: &[u8]) -> Option<&Rc<Zone>> {
        self.zones.get(key)
    }

    pub fn zones(&self) -> impl Iterator<Item = &Rc<Zone>> {
        self.zones.values()
    }

    /// The nearest enclosing zone of `key`, or `Err(())` if that is a zone still pending.
    fn zone_for(&self, key: &[u8]) -> Option<Result<&Zone, ()>> {
        for s in name::suffixes(key) {
            if let Some(z) = self.zones.get(s) {
                return Some(Ok(z));
            }
            if self.pending.contains(s) {
                return Some(Err(()));
            }
        }
        None
    }

    /// True if `key` is at or under a zone served here (answered, never forwarded).
    pub fn is_ours(&self, key: &[u8]) -> bool {
        self.zone_for(key).is_some()
    }

    /// The answer to (`qname`, `qtype`); `key` is `qname`'s lookup key.
    pub fn lookup(&self, key: &[u8], qname: &Dname, qtype: Rtype) -> Found<'_> {
        match self.zone_for(key) {
            Some(Ok(zone)) => Found::Answer(authoritative(zone, key, qname, qtype)),
            Some(Err(())) => Found::Pending,
            None => match self.hosts.as_deref().and_then(|h| h.node(key)) {
                Some(node) => Found::Answer(from_hosts(node, qtype)),
                None => Found::NotOurs,
            },
        }
    }
}

/// What a recursive server (`-r`) answers from the zones and the hosts file.
#[derive(Debug)]
pub enum Chased<'a> {
    /// The answer is whole here (or not ours at all, or pending).
    Found(Found<'a>),
    /// A CNAME chain from our data to a name that is not ours: `cnames` (its records, in
    /// order) come first in the client's answer, and `target` is forwarded.
    Out { cnames: Answer<'a>, target: Dname },
}

impl Store {
    /// The answer of a recursive server: a CNAME (or DNAME) chain that leaves a zone is
    /// followed into the other zones and the hosts file, and out to the forwarder, as BIND
    /// and dnsmasq follow it (RFC 1034 4.3.2 step 3a's restart), since a stub resolver
    /// (glibc's) does not ask again for the target and would find no address. Without
    /// recursion `lookup` stops at the zone's edge, as an authoritative server does.
    ///
    /// With `through_cuts` (the client asked for recursion, RD), a name at or below a
    /// delegation in our zones is forwarded too, as BIND with forwarders and `recursion yes`
    /// forwards it: the client wants the child zone's answer, which the referral only points
    /// at, and a stub resolver does not follow referrals. Without RD the referral stays: a
    /// resolver iterating to us needs it.
    pub fn lookup_recursive(
        &self,
        key: &[u8],
        qname: &Dname,
        qtype: Rtype,
        through_cuts: bool,
    ) -> Chased<'_> {
        let first = self.lookup(key, qname, qtype);
        let Found::Answer(mut ans) = first else {
            return Chased::Found(first);
        };
        let mut seen: Vec<Box<[u8]>> = vec![key.into()];
        loop {
            if through_cuts && ans.delegation {
                // The name that met the cut: the question's, or the chain's last target.
                return match chain_end(&ans) {
                    None => Chased::Found(Found::NotOurs),
                    Some(target) => {
                        ans.authority.clear();
                        ans.additional.clear();
                        ans.required_glue = 0;
                        ans.delegation = false;
                        Chased::Out {
                            cnames: ans,
                            target,
                        }
                    }
                };
            }
            if matches!(qtype, Rtype::CNAME | Rtype::ANY) {
                break;
            }
            let Some(target) = dangling(&ans) else { break };
            let tkey = name::key(&target);
            // A loop across zones, or a chain too long, ends here: the records so far.
            if seen.contains(&tkey) || seen.len() > MAX_CHAIN {
                break;
            }
            match self.lookup(&tkey, &target, qtype) {
                Found::Answer(next) => merge(&mut ans, next),
                Found::Pending => break,
                Found::NotOurs => {
                    return Chased::Out {
                        cnames: ans,
                        target,
                    };
                }
            }
            seen.push(tkey);
        }
        Chased::Found(Found::Answer(ans))
    }
}

/// The target of the CNAME that ends `ans`'s chain, if no record of the answer is for it.
fn chain_end(ans: &Answer<'_>) -> Option<Dname> {
    let last = ans.answer.last().filter(|r| r.rtype == Rtype::CNAME)?;
    let Some(ZoneRecordData::Cname(c)) = last.data.first() else {
        return None;
    };
    let target = c.cname();
    let t = name::key(target);
    let answered = ans.answer.iter().any(|r| name::key(&r.owner) == t);
    (!answered).then(|| target.clone())
}

/// The target of the CNAME that ends `ans`'s chain, if the chain stops there with no record
/// for it (it left the zone).
fn dangling(ans: &Answer<'_>) -> Option<Dname> {
    if ans.rcode != Rcode::NOERROR || !ans.authority.is_empty() {
        return None;
    }
    chain_end(ans)
}

/// `next`, the answer for a CNAME's target, appended to `ans`: its records after ours, its
/// code and authority (an SOA of the other zone for NXDOMAIN or NODATA), a referral's glue
/// first among the additional records.
fn merge<'a>(ans: &mut Answer<'a>, mut next: Answer<'a>) {
    ans.rcode = next.rcode;
    ans.delegation = next.delegation;
    ans.answer.append(&mut next.answer);
    ans.authority = next.authority;
    if next.required_glue > 0 {
        next.additional.append(&mut ans.additional);
        ans.additional = next.additional;
        ans.required_glue = next.required_glue;
    } else {
        ans.additional.append(&mut next.additional);
    }
}

/// A name of the hosts file: its addresses (or PTR), or no data; never NXDOMAIN, since the
/// file says nothing about other names.
fn from_hosts(node: &Node, qtype: Rtype) -> Answer<'_> {
    let answer = node
        .rrsets
        .iter()
        .filter(|s| s.rtype == qtype || qtype == Rtype::ANY)
        .map(|s| Rr::of(&node.name, s))
        .collect();
    Answer {
        rcode: Rcode::NOERROR,
        aa: true,
        answer,
        ..Answer::default()
    }
}

/// RFC 1034 4.3.2 within one zone.
pub fn authoritative<'z>(zone: &'z Zone, key: &[u8], qname: &Dname, qtype: Rtype) -> Answer<'z> {
    let mut ans = Answer {
        aa: true,
        ..Answer::default()
    };
    let mut key = key.to_vec();
    let mut owner = qname.clone();
    // The names looked up so far: a CNAME (or DNAME) loop ends at the first name met again,
    // each of its records once. The answer stays NOERROR, as NSD's: it is the zone's data,
    // whole, and a resolver sees the loop in it; BIND's SERVFAIL would say the server is
    // broken, and send resolvers to the other servers of the zone for the same data.
    // A list, not a set: a chain is at most MAX_CHAIN long, and an answer without one (the
    // common case) allocates nothing for it.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_CHAIN {
        match step(zone, &key, &owner, qtype, &mut ans) {
            Some(target) => {
                let k = name::key(&target).into_vec();
                if !name::is_within(&k, zone.apex_key()) || k == key || seen.contains(&k) {
                    break;
                }
                seen.push(std::mem::replace(&mut key, k));
                owner = target;
            }
            None => break,
        }
    }
    add_addresses(zone, &mut ans);
    ans
}

/// Adds a set to the answer section unless it is there already (a chain through one DNAME
/// twice): RFC 2181 5 sends an RRset once.
fn push_answer<'z>(ans: &mut Answer<'z>, rr: Rr<'z>) {
    let dup = ans
        .answer
        .iter()
        // Wire names compared as keys are (ASCII case folded; length octets are below 64,
        // never letters), without making two keys per record.
        .any(|r| {
            r.rtype == rr.rtype && r.owner.as_slice().eq_ignore_ascii_case(rr.owner.as_slice())
        });
    if !dup {
        ans.answer.push(rr);
    }
}

/// One name of a chain: adds what it has to `ans`; returns a CNAME's target to follow (a
/// DNAME's synthesised one included).
fn step<'z>(
    zone: &'z Zone,
    key: &[u8],
    qname: &Dname,
    qtype: Rtype,
    ans: &mut Answer<'z>,
) -> Option<Dname> {
    // Down from the apex, label by label: a delegation on the way is a referral, a missing
    // label ends at the closest encloser.
    let mut below: Vec<&[u8]> = name::suffixes(key)
        .take_while(|s| *s != zone.apex_key())
        .collect();
    below.reverse();
    let mut encloser = zone.apex_key();
    if zone.has_dname()
        && key != encloser
        && let Some(node) = zone.node(encloser)
        && let Some(dname) = node.get(Rtype::DNAME)
    {
        return substitute(node, dname, key, qname, ans);
    }
    for s in below {
        let Some(node) = zone.node(s) else {
            return wildcard(zone, encloser, qname, qtype, ans);
        };
        if let Some(ns) = node.get(Rtype::NS)
            && !(s == key && qtype == Rtype::DS)
        {
            referral(zone, node, ns, ans);
            return None;
        }
        if zone.has_dname()
            && s != key
            && let Some(dname) = node.get(Rtype::DNAME)
        {
            // RFC 6672 3.2: names below a DNAME are rewritten, whatever lies below it.
            return substitute(node, dname, key, qname, ans);
        }
        encloser = s;
    }
    let node = zone.node(key)?;
    let owner = node.name.clone();
    answer_from(zone, node, &owner, qtype, ans)
}

/// RFC 6672 3.2: `qname`, below the DNAME at `node`, has the DNAME's owner replaced by its
/// target. The answer gets the DNAME and a CNAME from `qname` to the new name (with the
/// DNAME's TTL), and the new name is followed as a CNAME's target; a new name over 255
/// bytes is YXDOMAIN, with the DNAME alone.
fn substitute<'z>(
    node: &'z Node,
    dname: &'z Rrset,
    key: &[u8],
    qname: &Dname,
    ans: &mut Answer<'z>,
) -> Option<Dname> {
    push_answer(ans, Rr::of(&node.name, dname));
    let Some(ZoneRecordData::Dname(d)) = dname.data.first() else {
        return None;
    };
    // The labels of `qname` above the DNAME's owner, as the client wrote them.
    let prefix = key.len().checked_sub(name::key(&node.name).len())?;
    let mut wire = qname.as_slice().get(..prefix)?.to_vec();
    wire.extend_from_slice(d.dname().as_slice());
    let target = match Dname::from_octets(bytes::Bytes::from(wire)) {
        Ok(t) if t.as_slice().len() <= name::MAX_NAME => t,
        _ => {
            ans.rcode = Rcode::YXDOMAIN;
            return None;
        }
    };
    ans.rcode = Rcode::NOERROR;
    push_answer(
        ans,
        Rr {
            owner: qname.clone(),
            ttl: dname.ttl,
            rtype: Rtype::CNAME,
            data: Cow::Owned(vec![ZoneRecordData::Cname(domain::rdata::Cname::new(
                target.clone(),
            ))]),
        },
    );
    Some(target)
}

/// The records of `node` for `qtype`, under `owner`; a CNAME's target to follow.
fn answer_from<'z>(
    zone: &'z Zone,
    node: &'z Node,
    owner: &Dname,
    qtype: Rtype,
    ans: &mut Answer<'z>,
) -> Option<Dname> {
    ans.rcode = Rcode::NOERROR;
    if qtype == Rtype::ANY {
        for s in &node.rrsets {
            push_answer(ans, Rr::of(owner, s));
        }
    } else if let Some(set) = node.get(qtype) {
        push_answer(ans, Rr::of(owner, set));
    } else if let Some(set) = node.get(Rtype::CNAME) {
        push_answer(ans, Rr::of(owner, set));
        if let Some(ZoneRecordData::Cname(c)) = set.data.first() {
            return Some(c.cname().clone());
        }
    }
    if !ans.answer.iter().any(|r| r.owner == *owner) {
        negative(zone, ans);
    }
    None
}

/// No node for the name: a wildcard at the closest encloser answers, or NXDOMAIN.
fn wildcard<'z>(
    zone: &'z Zone,
    encloser: &[u8],
    qname: &Dname,
    qtype: Rtype,
    ans: &mut Answer<'z>,
) -> Option<Dname> {
    match zone.node(&name::wildcard_of(encloser)) {
        Some(node) => answer_from(zone, node, qname, qtype, ans),
        None => {
            ans.rcode = Rcode::NXDOMAIN;
            negative(zone, ans);
            None
        }
    }
}

/// The SOA in the authority section, with the TTL of RFC 2308 3: min(SOA TTL, MINIMUM).
fn negative<'z>(zone: &'z Zone, ans: &mut Answer<'z>) {
    if let Some(soa) = zone.soa() {
        let minimum = zone.soa_timers().map_or(soa.ttl, |t| t.minimum);
        let mut rr = Rr::of(&zone.apex, soa);
        rr.ttl = soa.ttl.min(minimum);
        ans.authority.push(rr);
    }
}

/// A delegation: the child's NS set, not authoritative, with the glue we hold.
fn referral<'z>(zone: &'z Zone, cut: &'z Node, ns: &'z Rrset, ans: &mut Answer<'z>) {
    ans.rcode = Rcode::NOERROR;
    ans.aa = ans.answer.iter().any(|r| r.rtype == Rtype::CNAME);
    ans.delegation = true;
    ans.authority.push(Rr::of(&cut.name, ns));
    let cut_key = name::key(&cut.name);
    for d in &ns.data {
        if let ZoneRecordData::Ns(n) = d {
            let k = name::key(n.nsdname());
            if !name::is_within(&k, &cut_key) {
                continue;
            }
            if let Some(node) = zone.node(&k) {
                for t in [Rtype::A, Rtype::AAAA] {
                    if let Some(set) = node.get(t) {
                        ans.additional.push(Rr::of(&node.name, set));
                    }
                }
            }
        }
    }
    ans.required_glue = ans.additional.len();
}

/// Addresses of the MX, NS and SRV targets answered (RFC 1034 4.3.2 step 6), from this zone.
fn add_addresses<'z>(zone: &'z Zone, ans: &mut Answer<'z>) {
    let mut targets: Vec<Dname> = Vec::new();
    let sets = ans.answer.iter().chain(ans.authority.iter());
    for rr in sets.filter(|r| matches!(r.rtype, Rtype::MX | Rtype::NS | Rtype::SRV)) {
        if rr.rtype == Rtype::NS && ans.required_glue > 0 {
            continue; // a referral's glue is already there
        }
        for d in rr.data.iter() {
            let t = match d {
                ZoneRecordData::Mx(m) => m.exchange(),
                ZoneRecordData::Ns(n) => n.nsdname(),
                ZoneRecordData::Srv(s) => s.target(),
                _ => continue,
            };
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
    }
    for t in &targets {
        let k = name::key(t);
        if !name::is_within(&k, zone.apex_key()) {
            continue;
        }
        let Some(node) = zone.node(&k) else { continue };
        for ty in [Rtype::A, Rtype::AAAA] {
            let dup = |r: &Rr<'_>| r.rtype == ty && name::key(&r.owner) == k;
            if let Some(set) = node.get(ty)
                && !ans.answer.iter().any(dup)
                && !ans.additional.iter().any(dup)
            {
                ans.additional.push(Rr::of(&node.name, set));
            }
        }
    }
}
