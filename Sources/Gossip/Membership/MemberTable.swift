import Crypto

extension Membership {
    /// The watched peers, sorted by peer ID in one array.
    ///
    /// A lookup is a binary search over a few dozen entries; iteration follows the key order
    /// (never a hash order); and the table costs its members' bytes, with no empty buckets and
    /// no second copy of each key. A simulation holds one of these per node, a million of them.
    struct MemberTable: Sendable {
        /// The members, in peer order.
        private(set) var members: [Member] = []

        var count: Int { members.count }

        /// Where `peer` is, or where it would go.
        private func position(of peer: PeerID) -> (index: Int, found: Bool) {
            var low = 0
            var high = members.count
            while low < high {
                let mid = (low + high) / 2
                let key = members[mid].record.peer
                if key == peer { return (mid, true) }
                if key < peer { low = mid + 1 } else { high = mid }
            }
            return (low, false)
        }

        /// The member `peer`; setting nil removes it, setting a member inserts or replaces it.
        subscript(peer: PeerID) -> Member? {
            get {
                let p = position(of: peer)
                return p.found ? members[p.index] : nil
            }
            set {
                let p = position(of: peer)
                switch (p.found, newValue) {
                case (true, let member?): members[p.index] = member
                case (true, nil): members.remove(at: p.index)
                case (false, let member?): members.insert(member, at: p.index)
                case (false, nil): break
                }
            }
        }

        /// Removes `peer`, returning what was held.
        @discardableResult
        mutating func removeValue(forKey peer: PeerID) -> Member? {
            let p = position(of: peer)
            return p.found ? members.remove(at: p.index) : nil
        }

        /// Keeps only the members for which `keep` holds.
        mutating func keep(where keep: (Member) -> Bool) {
            members.removeAll { !keep($0) }
        }
    }
}
