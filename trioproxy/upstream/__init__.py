"""The upstream race: staggered attempts, one attempt, the network transport."""
