/* Software prefetch, for the simulator: start loading a node's state into the cache a few
 * events before it is handled, so that the misses of many nodes overlap. */
static inline void murmur_prefetch(const void *address) { __builtin_prefetch(address, 1, 3); }
