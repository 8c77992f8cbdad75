#include "mgmt/incoming_migration.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "accel/accelerator.h"
#include "machine/machine_builder.h"
#include "machine/vm_definition.h"
#include "migration/machine_state.h"
#include "migration/migration_protocol.h"
#include "storage/image_format.h"

namespace lamina::mgmt {

using migration::kPageBytes;
using migration::MessageType;

namespace {

std::vector<std::byte> refusal(const std::string& why) {
  return migration::make_json_message(MessageType::kRefuse, {{"error", why}});
}

// The largest disk --storage copy creates (VHDX's own limit is 64 TiB).
constexpr uint64_t kMaxCopiedDisk = uint64_t{64} << 40;

struct DiskCopyPlan {
  std::string path;
  const storage::ImageFormat* format;
  uint64_t size;
};

// --storage copy: one {"format", "size"} per disk of the definition, each to be created empty
// at the definition's path, which must be absolute and free, in a folder that exists.
Result<std::vector<DiskCopyPlan>> plan_disk_copies(const nlohmann::json& offer,
                                                   const machine::VmConfig& config) {
  const auto& copies = offer.contains("disk_copies") ? offer["disk_copies"] : nlohmann::json();
  if (!copies.is_array() || copies.size() != config.disks.size()) {
    return fail(ErrorCode::kInvalidArgument, "the offer's disk_copies do not match its disks");
  }
  std::vector<DiskCopyPlan> plans;
  for (size_t index = 0; index < copies.size(); ++index) {
    const auto& copy = copies[index];
    const std::string& path = config.disks[index].path;
    const std::string format_name = copy.is_object() ? copy.value("format", std::string()) : "";
    const storage::ImageFormat* format = storage::find_format(format_name);
    if (format == nullptr || format->create == nullptr ||
        !migration::copyable_disk_format(format_name)) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("cannot create a '{}' disk", format_name));
    }
    const nlohmann::json size = copy.is_object() && copy.contains("size") ? copy["size"] : nlohmann::json();
    if (!size.is_number_unsigned() || size.get<uint64_t>() == 0 || size.get<uint64_t>() % 512 != 0 ||
        size.get<uint64_t>() > kMaxCopiedDisk) {
      return fail(ErrorCode::kInvalidArgument, "a copied disk's size must be whole sectors, up to 64 TiB");
    }
    const std::filesystem::path where(path);
    std::error_code error;
    if (!where.is_absolute() || !std::filesystem::is_directory(where.parent_path(), error)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: --storage copy needs an absolute path in a folder that exists here", path));
    }
    if (std::filesystem::symlink_status(where, error).type() != std::filesystem::file_type::not_found) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} exists on this host; --storage copy writes new images (choose "
                              "another --destination-dir)",
                              path));
    }
    for (const DiskCopyPlan& earlier : plans) {
      if (earlier.path == path) {
        return fail(ErrorCode::kInvalidArgument, fmt::format("two disks would be copied to {}", path));
      }
    }
    plans.push_back({path, format, size.get<uint64_t>()});
  }
  return plans;
}

uint64_t ram_pages(const std::vector<RamRegion>& regions) {
  uint64_t pages = 0;
  for (const RamRegion& region : regions) pages += region.size / kPageBytes;
  return pages;
}

// 16 random bytes as hex: a lane presents it to join its migration.
std::string random_join_id() {
  std::array<uint8_t, 16> bytes{};
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  std::string id;
  for (uint8_t byte : bytes) id += fmt::format("{:02x}", byte);
  return id;
}

void remove_copies(std::vector<IncomingMigration::CopiedDisk>& disks) {
  for (IncomingMigration::CopiedDisk& disk : disks) {
    disk.image.reset();
    std::error_code ignored;
    std::filesystem::remove(disk.path, ignored);
  }
  disks.clear();
}

}  // namespace

IncomingMigration::IncomingMigration(VmService& service, std::string name,
                                     std::vector<RamRegion> regions, UniqueFd state,
                                     std::vector<CopiedDisk> disks, LaunchedWorker worker,
                                     uint32_t connections, std::string join_id)
    : service_(service),
      name_(std::move(name)),
      regions_(std::move(regions)),
      state_(std::move(state)),
      disks_(std::move(disks)),
      worker_(std::move(worker)),
      rounds_(ram_pages(regions_)),
      connections_(connections),
      join_id_(std::move(join_id)),
      lane_joined_(connections, false) {
  for (const RamRegion& region : regions_) ram_length_ += region.size;
}

IncomingMigration::~IncomingMigration() {
  service_.migration_joins().remove(join_id_);
  discard("the migration ended before the VM started here");
}

void IncomingMigration::close() {
  service_.migration_joins().remove(join_id_);
  finished_ = true;
  if (started_) {
    record_start();
  } else {
    discard("the migration ended before the VM started here");
  }
  lanes_changed_.notify_all();
}

void IncomingMigration::record_start() {
  if (recorded_) return;
  recorded_ = true;
  service_.mark_incoming(name_, false);
  service_.record_event(name_, "migration",
                        {{"phase", "completed"},
                         {"direction", "incoming"},
                         {"pages", pages_.load()},
                         {"start_ms", start_ms_},
                         {"switchover", switchover_phases_.to_json()}});
}

Result<void> IncomingMigration::join_lane(uint32_t lane) {
  std::lock_guard lock(lanes_mutex_);
  if (finished_ || discarded_) return fail(ErrorCode::kInvalidArgument, "the migration is over");
  if (lane == 0 || lane >= connections_) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("lane {} was not granted ({} connections)", lane, connections_));
  }
  if (lane_joined_[lane]) return fail(ErrorCode::kInvalidArgument, fmt::format("lane {} joined twice", lane));
  lane_joined_[lane] = true;
  return {};
}

Result<bool> IncomingMigration::receive_lane(uint32_t lane, std::span<const std::byte> message) {
  // Not finished_: the main link's switchover may arrive before a lane's last pages, and it
  // waits for them; once it gave up (or the migration ended otherwise) discarded_ is set.
  if (discarded_) return fail(ErrorCode::kInvalidArgument, "migration lane: the migration is over");
  auto type = migration::message_type(message);
  if (!type) return fail(type.error());
  if (*type == MessageType::kLaneEnd) {
    std::lock_guard lock(lanes_mutex_);
    ++lanes_ended_;
    lanes_changed_.notify_all();
    return true;
  }
  if (*type != MessageType::kPages) {
    return fail(ErrorCode::kCorrupt, fmt::format("migration lane {}: only pages may come on a lane", lane));
  }
  if (auto written = write_pages(message); !written) return fail(written.error());
  return false;
}

void IncomingMigration::discard(const std::string& why) {
  if (started_ || discarded_.exchange(true)) return;
  // Nothing of an unfinished migration stays: the launched worker, the images and the
  // definition it created go.
  worker_ = LaunchedWorker();
  remove_copies(disks_);
  service_.mark_incoming(name_, false);
  (void)service_.remove(name_, false);
  service_.record_event(name_, "migration", {{"phase", "failed"}, {"direction", "incoming"}, {"error", why}});
}

IncomingMigration::Opened IncomingMigration::offer(VmService& service,
                                                   std::span<const std::byte> message) {
  auto type = migration::message_type(message);
  if (!type || *type != MessageType::kOffer) return {nullptr, refusal("expected an offer first")};
  auto body = migration::message_json(message);
  if (!body) return {nullptr, refusal(body.error().message())};
  const std::string name = body->value("name", std::string());
  // Connections the source would like: granted up to kMaxConnections (an older source asks
  // for none: one).
  const auto& asked = body->contains("connections") ? (*body)["connections"] : nlohmann::json(1);
  if (!asked.is_number_unsigned() || asked.get<uint64_t>() < 1) {
    return {nullptr, refusal("connections must be a whole number of 1 or more")};
  }
  const uint32_t connections =
      static_cast<uint32_t>(std::min<uint64_t>(asked.get<uint64_t>(), migration::kMaxConnections));
  if (!body->contains("definition") || !(*body)["definition"].is_object()) {
    return {nullptr, refusal("the offer has no definition")};
  }
  const nlohmann::json& definition = (*body)["definition"];
  // The RAM layout comes from the definition, as the worker that restores will build it; the
  // offer's own figure must agree (the restore checks every detail again).
  auto config = machine::vm_config_from_definition(definition, machine::HostChecks::kNone);
  if (!config) return {nullptr, refusal(config.error().message())};
  // A VM that is to run on KVM here needs a KVM that works here (auto falls back to the
  // built-in CPU, which restores the same state).
  // The host's CPU model exists on KVM only (the definition's check refuses it with emu).
  if (config->cpu_model == machine::CpuModel::kHost && config->accel == machine::AccelKind::kAuto) {
    if (auto host = accel::probe_kvm(); !host) {
      return {nullptr, refusal(fmt::format("the VM runs the host's CPU model (cpu_model host), "
                                           "which only KVM presents, and this host has no usable "
                                           "KVM ({})",
                                           host.error().message()))};
    }
  }
  if (config->accel == machine::AccelKind::kKvm) {
    if (auto host = accel::probe_kvm(); !host) {
      return {nullptr, refusal(fmt::format("this host cannot run the VM on KVM ({}); migrate it "
                                           "with --accel emu or --accel auto",
                                           host.error().message()))};
    }
  }
  const uint64_t memory_bytes = config->memory_bytes;
  if (body->value("memory_bytes", uint64_t{0}) != memory_bytes) {
    return {nullptr, refusal("the offer's memory size does not match its definition")};
  }
  auto layout = machine::machine_memory_layout(memory_bytes, config->max_memory_bytes);
  if (!layout) return {nullptr, refusal(layout.error().message())};
  nlohmann::json create{{"name", name},
                        {"definition", definition},
                        {"autostart", body->value("autostart", false)},
                        {"on_crash", body->value("on_crash", std::string("stay"))}};
  const std::string storage = (*body)["storage"].is_string() ? (*body)["storage"].get<std::string>() : "shared";
  if (storage != "shared" && storage != "copy") return {nullptr, refusal("storage is shared or copy")};
  std::vector<DiskCopyPlan> copy_plans;
  if (storage == "copy") {
    auto plans = plan_disk_copies(*body, *config);
    if (!plans) return {nullptr, refusal(plans.error().message())};
    copy_plans = std::move(*plans);
  }
  // Shared storage: this host must see every disk where the source does (the source holds
  // their locks until the switchover, so they are not opened yet).
  for (const auto& disk : config->disks) {
    if (storage == "copy") break;
    std::error_code error;
    if (!std::filesystem::is_regular_file(disk.path, error)) {
      return {nullptr, refusal(fmt::format("this host does not see the disk {} (--storage shared "
                                           "needs the same paths on both hosts)",
                                           disk.path))};
    }
  }
  auto created = service.create(create, machine::HostChecks::kNone);
  if (!created) return {nullptr, refusal(created.error().message)};
  std::vector<std::string> copy_paths;
  for (const DiskCopyPlan& plan : copy_plans) copy_paths.push_back(plan.path);
  service.mark_incoming(name, true, copy_paths);
  std::vector<CopiedDisk> disks;
  for (const DiskCopyPlan& plan : copy_plans) {
    storage::CreateOptions options;
    options.size = plan.size;
    auto image = plan.format->create(plan.path, options);
    if (!image) {
      remove_copies(disks);
      service.mark_incoming(name, false);
      (void)service.remove(name, false);
      return {nullptr, refusal(image.error().with_context(fmt::format("creating {}", plan.path)).message())};
    }
    disks.push_back({plan.path, std::move(*image)});
  }
  const std::vector<RamRegion> regions = layout->ram_regions();
  uint64_t ram_length = 0;
  for (const RamRegion& region : regions) ram_length += region.size;
  UniqueFd state(::memfd_create(fmt::format("lamina-incoming-{}", name).c_str(), MFD_CLOEXEC));
  if (!state || ::ftruncate(state.get(), static_cast<off_t>(migration::kIncomingRamOffset + ram_length)) != 0) {
    const std::string why = std::strerror(errno);
    remove_copies(disks);
    service.mark_incoming(name, false);
    (void)service.remove(name, false);
    return {nullptr, refusal(fmt::format("cannot make room for the VM's memory here: {}", why))};
  }
  // The worker now, not at the switchover: its start is the guest's downtime. Without one
  // (launching failed) the switchover starts a worker as any start does.
  LaunchedWorker worker;
  if (auto launched = service.launch_worker(name)) worker = std::move(*launched);
  service.record_event(name, "migration",
                       {{"phase", "incoming"}, {"ram_bytes", ram_length}, {"worker_launched", worker.process != nullptr},
                        {"connections", connections}});
  const std::string join_id = random_join_id();
  std::shared_ptr<IncomingMigration> migration(new IncomingMigration(
      service, name, regions, std::move(state), std::move(disks), std::move(worker), connections, join_id));
  service.migration_joins().add(join_id, migration);
  return {std::move(migration),
          migration::make_json_message(MessageType::kAccept, {{"connections", connections}, {"join", join_id}})};
}

Result<void> IncomingMigration::write_pages(std::span<const std::byte> message) {
  auto pages = migration::decode_pages(message);
  if (!pages) return fail(pages.error());
  size_t data_at = 0;
  for (size_t index = 0; index < pages->addresses.size(); ++index) {
    const uint64_t address = pages->addresses[index];
    // The page's place in the state file: regions back to back after kIncomingRamOffset.
    uint64_t file_offset = migration::kIncomingRamOffset;
    bool inside = false;
    for (const RamRegion& region : regions_) {
      if (address >= region.guest_physical && address - region.guest_physical < region.size) {
        file_offset += address - region.guest_physical;
        inside = true;
        break;
      }
      file_offset += region.size;
    }
    if (!inside) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("migration stream: page {:#x} is not in the VM's RAM", address));
    }
    std::span<const std::byte> data;
    if (!pages->zero[index]) {
      data = std::span<const std::byte>(pages->data.data() + data_at, kPageBytes);
      data_at += kPageBytes;
    }
    // Another connection may have brought a later round's copy of this page already.
    Result<void> written;
    const uint64_t page = (file_offset - migration::kIncomingRamOffset) / kPageBytes;
    rounds_.apply(page, pages->round, [&] {
      if (data.empty()) {
        if (::fallocate(state_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        static_cast<off_t>(file_offset), kPageBytes) != 0) {
          written = fail(ErrorCode::kIo, fmt::format("incoming RAM: {}", std::strerror(errno)));
        }
      } else {
        written = migration::write_state_ram(state_.get(), file_offset, data);
        if (!written) written = fail(written.error().with_context("incoming RAM"));
      }
      return written.has_value();
    });
    if (!written) return written;
    ++pages_;
  }
  return {};
}

Result<void> IncomingMigration::write_disk_chunk(std::span<const std::byte> message) {
  auto chunk = migration::decode_disk_chunk(message);
  if (!chunk) return fail(chunk.error());
  if (chunk->disk >= disks_.size()) {
    return fail(ErrorCode::kCorrupt, fmt::format("migration stream: a chunk of disk {}, which is not copied", chunk->disk));
  }
  storage::BlockDevice& image = *disks_[chunk->disk].image;
  if (chunk->offset > image.size() || chunk->length > image.size() - chunk->offset) {
    return fail(ErrorCode::kCorrupt, "migration stream: a disk chunk past the disk's end");
  }
  auto written = chunk->zero ? image.write_zeroes(chunk->offset, chunk->length, true)
                             : image.write(chunk->offset, chunk->data);
  if (!written) return fail(written.error().with_context(fmt::format("writing {}", disks_[chunk->disk].path)));
  return {};
}

std::vector<std::byte> IncomingMigration::switchover() {
  finished_ = true;
  // Undone before the source hears of it, so that it may offer the VM here again at once.
  auto failed = [&](const std::string& why) {
    discard(fmt::format("the VM could not start here: {}", why));
    return migration::make_json_message(MessageType::kFailed, {{"error", why}});
  };
  if (!have_stream_) return failed("the switchover came before the machine state");
  // Where the destination's share of the downtime goes, sent back with kStarted.
  const auto switchover_at = std::chrono::steady_clock::now();
  migration::PhaseTimes& phases = switchover_phases_;
  phases = migration::PhaseTimes();
  {
    // The lanes' last pages left the source before its switchover, on other connections:
    // wait for each lane's end (a lane that never joined or stalls fails the migration).
    std::unique_lock lock(lanes_mutex_);
    const uint32_t lanes = connections_ - 1;
    if (!lanes_changed_.wait_for(lock, std::chrono::seconds(30),
                                 [&] { return lanes_ended_ >= lanes || discarded_; }) ||
        lanes_ended_ < lanes) {
      const uint32_t ended = lanes_ended_;
      lock.unlock();
      return failed(fmt::format("{} of the {} further connections did not bring all their pages",
                                lanes - ended, lanes));
    }
  }
  phases.mark("lanes_end");
  if (auto written = migration::write_stream_and_header(state_.get(), stream_,
                                                        migration::kIncomingRamOffset, ram_length_);
      !written) {
    return failed(written.error().message());
  }
  phases.mark("state_file");
  // The copied images are complete: closed (their locks released) for the VM's worker.
  for (CopiedDisk& disk : disks_) {
    if (auto flushed = disk.image->flush(); !flushed) {
      return failed(flushed.error().with_context(fmt::format("writing {}", disk.path)).message());
    }
    disk.image.reset();
  }
  if (!disks_.empty()) phases.mark("copied_disks_close");
  // The worker answers once the VM's machine is built and restored: it runs from here on.
  auto started = service_.start(name_, state_.get(), &worker_, &phases);
  if (!started) return failed(started.error().message);
  started_ = true;
  disks_.clear();  // the VM's now
  // How long the VM took to start here: the destination's share of the downtime.
  start_ms_ = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - switchover_at)
                                        .count());
  // The marker and the event (a synchronous inventory write) wait until the source has its
  // answer (close(), after the reply is sent): they are no part of the guest's downtime.
  return migration::make_json_message(MessageType::kStarted, {{"phases", phases.to_json()}});
}

Result<std::optional<std::vector<std::byte>>> IncomingMigration::receive(
    std::span<const std::byte> message) {
  if (finished_) return fail(ErrorCode::kInvalidArgument, "migration stream: a message after the end");
  auto type = migration::message_type(message);
  if (!type) return fail(type.error());
  switch (*type) {
    case MessageType::kPages:
      if (have_stream_) {
        return fail(ErrorCode::kCorrupt, "migration stream: pages after the machine state");
      }
      if (auto written = write_pages(message); !written) return fail(written.error());
      return std::optional<std::vector<std::byte>>();
    case MessageType::kState:
      if (have_stream_ || message.size() - 1 > migration::kMaxStateStream) {
        return fail(ErrorCode::kCorrupt, "migration stream: a second or oversized machine state");
      }
      stream_.assign(message.begin() + 1, message.end());
      have_stream_ = true;
      return std::optional<std::vector<std::byte>>();
    case MessageType::kDiskChunk:
      if (have_stream_) {
        return fail(ErrorCode::kCorrupt, "migration stream: disk chunks after the machine state");
      }
      if (auto written = write_disk_chunk(message); !written) return fail(written.error());
      return std::optional<std::vector<std::byte>>();
    case MessageType::kSwitchover: return std::optional<std::vector<std::byte>>(switchover());
    default:
      return fail(ErrorCode::kCorrupt,
                  fmt::format("migration stream: unexpected message type {}",
                              static_cast<int>(*type)));
  }
}

}  // namespace lamina::mgmt
