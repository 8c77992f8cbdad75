#pragma once
// MacTable: the virtual switch's forwarding database (IEEE 802.1D section 7.8, "filtering
// database"): which port a unicast MAC address was last seen on, with ageing. Pure logic with
// the time passed in, so tests drive it without sleeping.
//
// Every per-frame operation is O(1): entries sit in a hash map keyed with a random per-table
// key (a guest choosing source addresses cannot make them collide) and on a list ordered by
// when they were last seen, so ageing pops from the front instead of scanning the table. Two
// bounds hold against a guest flooding source addresses: `capacity` entries in all and
// `port_capacity` per port (a port at its bound keeps its old entries; new sources from it are
// not learned, and frames to them flood).
//
// Ownership: a value owned by the switch daemon. Thread-safety: none (the daemon has one thread).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

#include "net/mac_address.h"

namespace lamina::net {

using SwitchPortId = uint32_t;

class MacTable {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Learned {
    kNew,        // a new entry
    kRefreshed,  // same port, timestamp renewed
    kMoved,      // the station now answers on another port
    kTableFull,  // not learned: the table holds `capacity` live entries (frames to it flood)
    kPortFull,   // not learned: the port holds `port_capacity` live entries
  };

  struct Entry {
    MacAddress address;
    SwitchPortId port = 0;
    Clock::duration age{};  // time since the address was last seen
  };

  // age: an entry unseen this long is forgotten (802.1D's default ageing time is 300 s).
  MacTable(Clock::duration age, size_t capacity, size_t port_capacity = SIZE_MAX);

  // Records that `address` (a unicast source address) was seen on `port` at `now`. Times
  // should not go backwards (the daemon passes steady_clock readings); an earlier one is
  // still placed correctly, at the cost of a walk.
  Learned learn(const MacAddress& address, SwitchPortId port, Clock::time_point now);
  // The port `address` was last seen on, unless the entry aged out.
  std::optional<SwitchPortId> lookup(const MacAddress& address, Clock::time_point now) const;
  // Forgets every address learned on `port` (it disconnected); returns how many. O(entries):
  // once per disconnect, not per frame.
  size_t forget_port(SwitchPortId port);
  // Drops aged entries; returns how many. O(entries dropped).
  size_t expire(Clock::time_point now);

  // Live entries sorted by port, then address.
  std::vector<Entry> entries(Clock::time_point now) const;
  size_t size() const { return table_.size(); }
  // Entries (live or not yet expired) learned on `port`.
  size_t port_size(SwitchPortId port) const;
  Clock::duration age() const { return age_; }
  size_t capacity() const { return capacity_; }
  size_t port_capacity() const { return port_capacity_; }
  // The hash map's bucket count and its longest bucket (tests check that crafted addresses do
  // not pile up in one bucket).
  size_t bucket_count() const { return table_.bucket_count(); }
  size_t longest_bucket() const;

 private:
  struct KeyedHash {
    uint64_t key;
    size_t operator()(const MacAddress& address) const;
  };
  struct Slot {
    SwitchPortId port;
    Clock::time_point last_seen;
    std::list<MacAddress>::iterator order;  // its place in by_age_
  };
  using Table = std::unordered_map<MacAddress, Slot, KeyedHash>;

  bool expired(const Slot& slot, Clock::time_point now) const {
    return now - slot.last_seen >= age_;
  }
  // Moves the entry's place in by_age_ to fit its new last_seen.
  void place(Slot& slot);
  void erase(Table::iterator entry);
  void count(SwitchPortId port, int delta);

  Clock::duration age_;
  size_t capacity_;
  size_t port_capacity_;
  Table table_;
  std::list<MacAddress> by_age_;  // least recently seen first
  std::unordered_map<SwitchPortId, size_t> per_port_;
};

}  // namespace lamina::net
