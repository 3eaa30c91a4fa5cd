//! Key → slot → core. slot = CRC16-XMODEM(key, or its `{hash tag}`) mod 16384, exactly as
//! Redis Cluster computes it, so cluster clients agree with us on every key.

/// Number of hash slots, as in Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16 with the XMODEM polynomial (0x1021), bitwise table built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ b) as usize]
    })
}

/// The part of a key that is hashed: the content of the first `{…}` if it is non-empty,
/// otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) & (SLOTS - 1)
}

/// The data core that owns a slot: slots are dealt out in contiguous ranges, so a core's
/// keys stay together when a node later hands whole slot ranges to another node.
pub fn slot_core(slot: u16, cores: usize) -> usize {
    slot as usize * cores / SLOTS as usize
}

pub fn key_core(key: &[u8], cores: usize) -> usize {
    if cores == 1 {
        0
    } else {
        slot_core(key_slot(key), cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster_spec() {
        // From the Redis Cluster specification: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        // Slots redis-cli CLUSTER KEYSLOT reports.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 16383);
    }

    #[test]
    fn cores_get_contiguous_equal_ranges() {
        assert_eq!(slot_core(0, 2), 0);
        assert_eq!(slot_core(8191, 2), 0);
        assert_eq!(slot_core(8192, 2), 1);
        assert_eq!(slot_core(16383, 3), 2);
    }
}
