#include "net/mac_table.h"

#include <algorithm>
#include <random>

namespace lamina::net {

namespace {

// splitmix64's finalizer: every input bit affects every output bit.
uint64_t mix(uint64_t value) {
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}

uint64_t random_key() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

}  // namespace

size_t MacTable::KeyedHash::operator()(const MacAddress& address) const {
  return static_cast<size_t>(mix(address.to_integer() ^ key));
}

MacTable::MacTable(Clock::duration age, size_t capacity, size_t port_capacity)
    : age_(age),
      capacity_(capacity),
      port_capacity_(port_capacity),
      // Buckets for the whole table up front, so learning never rehashes mid-flood.
      table_(std::min<size_t>(capacity, 65536), KeyedHash{random_key()}) {}

size_t MacTable::longest_bucket() const {
  size_t longest = 0;
  for (size_t bucket = 0; bucket < table_.bucket_count(); ++bucket) {
    longest = std::max(longest, table_.bucket_size(bucket));
  }
  return longest;
}

MacTable::Learned MacTable::learn(const MacAddress& address, SwitchPortId port,
                                  Clock::time_point now) {
  expire(now);
  auto found = table_.find(address);
  if (found != table_.end()) {
    Slot& slot = found->second;
    if (slot.port == port) {
      slot.last_seen = std::max(slot.last_seen, now);
      place(slot);
      return Learned::kRefreshed;
    }
    // A station moving to a port counts against that port's bound like a new one.
    if (port_size(port) >= port_capacity_) return Learned::kPortFull;
    count(slot.port, -1);
    count(port, +1);
    slot.port = port;
    slot.last_seen = std::max(slot.last_seen, now);
    place(slot);
    return Learned::kMoved;
  }
  if (table_.size() >= capacity_) return Learned::kTableFull;
  if (port_size(port) >= port_capacity_) return Learned::kPortFull;
  auto inserted = table_.emplace(address, Slot{port, now, by_age_.insert(by_age_.end(), address)});
  place(inserted.first->second);
  count(port, +1);
  return Learned::kNew;
}

void MacTable::place(Slot& slot) {
  // Usually the newest: its place is the end. Only an earlier time walks back.
  by_age_.splice(by_age_.end(), by_age_, slot.order);
  auto position = slot.order;
  while (position != by_age_.begin()) {
    auto previous = std::prev(position);
    if (table_.find(*previous)->second.last_seen <= slot.last_seen) break;
    position = previous;
  }
  if (position != slot.order) by_age_.splice(position, by_age_, slot.order);
}

std::optional<SwitchPortId> MacTable::lookup(const MacAddress& address,
                                             Clock::time_point now) const {
  auto found = table_.find(address);
  if (found == table_.end() || expired(found->second, now)) return std::nullopt;
  return found->second.port;
}

void MacTable::erase(Table::iterator entry) {
  count(entry->second.port, -1);
  by_age_.erase(entry->second.order);
  table_.erase(entry);
}

void MacTable::count(SwitchPortId port, int delta) {
  if (delta > 0) {
    ++per_port_[port];
    return;
  }
  auto found = per_port_.find(port);
  if (found != per_port_.end() && --found->second == 0) per_port_.erase(found);
}

size_t MacTable::port_size(SwitchPortId port) const {
  auto found = per_port_.find(port);
  return found == per_port_.end() ? 0 : found->second;
}

size_t MacTable::forget_port(SwitchPortId port) {
  size_t forgotten = 0;
  for (auto entry = table_.begin(); entry != table_.end();) {
    auto next = std::next(entry);
    if (entry->second.port == port) {
      erase(entry);
      ++forgotten;
    }
    entry = next;
  }
  return forgotten;
}

size_t MacTable::expire(Clock::time_point now) {
  size_t expired_count = 0;
  while (!by_age_.empty()) {
    auto oldest = table_.find(by_age_.front());
    if (!expired(oldest->second, now)) break;
    erase(oldest);
    ++expired_count;
  }
  return expired_count;
}

std::vector<MacTable::Entry> MacTable::entries(Clock::time_point now) const {
  std::vector<Entry> result;
  for (const auto& [address, slot] : table_) {
    if (!expired(slot, now)) result.push_back({address, slot.port, now - slot.last_seen});
  }
  std::sort(result.begin(), result.end(), [](const Entry& a, const Entry& b) {
    return a.port != b.port ? a.port < b.port : a.address < b.address;
  });
  return result;
}

}  // namespace lamina::net
