// Hostile images: generated cases for each format that lie about their size (sparse headers
// claiming huge tables), point table entries into metadata or past the end, loop, or name
// host files they must not reach (/etc/passwd, FIFOs, devices, symlinks, ".."). Each case runs
// `disk info`, `check`, opening and a convert in a child process under an address-space
// limit and an alarm, and must end with a clear one-line error (or, where noted, succeed)
// without crashing, hanging or leaking a referenced file's bytes.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <fmt/format.h>
#include <functional>
#include <string>

#include "base/byte_order.h"
#include "image_builders.h"
#include "image_test_support.h"
#include "storage/host_file.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "storage/vhd_create.h"
#include "storage/vhd_image.h"
#include "storage/vhdx_image.h"
#include "storage/vhdx_layout.h"

namespace lamina::storage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Far below what the unbounded allocations of a crafted header used to take (1 GiB and up).
constexpr rlim_t kAddressSpaceLimit = 512ull << 20;
constexpr unsigned kSecondsPerCase = 20;

void write_bytes(const fs::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::byte> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

void patch_be32(const fs::path& path, uint64_t offset, uint32_t value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::array<std::byte, 4> bytes{};
  store_be<uint32_t>(bytes.data(), value);
  ASSERT_EQ(::pwrite(fd, bytes.data(), 4, static_cast<off_t>(offset)), 4);
  ::close(fd);
}

// A dynamic VHD made by Lamina, and where its BAT lies.
struct MadeVhd {
  fs::path path;
  uint64_t bat_offset = 0;
  uint32_t entries = 0;
};

MadeVhd make_dynamic_vhd(const fs::path& path, uint64_t size, uint32_t block_size) {
  CreateOptions options;
  options.size = size;
  options.block_size = block_size;
  auto created = create_image(path.string(), "vhd", options, false);
  EXPECT_TRUE(created) << created.error().message();
  auto image = VhdImage::open(path.string(), {});
  EXPECT_TRUE(image);
  if (!image) return {path};
  return {path, (*image)->dynamic_header()->table_offset,
          (*image)->dynamic_header()->max_table_entries};
}

// A differencing VHD whose locators name `parent` (any path; it need not be a VHD).
void make_vhd_child(const fs::path& path, const std::string& parent) {
  vhd::CreateSpec spec;
  spec.type = vhd::DiskType::kDifferencing;
  spec.size = 4 << 20;
  spec.parent = vhd::ParentLink{parent, vhd::random_uuid(), 0};
  auto file = HostFile::open(path.string(), HostFile::Mode::kCreateExclusive);
  ASSERT_TRUE(file);
  ASSERT_TRUE(vhd::write_new_image(*file, spec));
}

// The spec-built qcow2 (512-byte clusters) with a backing file name and format in its header.
void make_qcow2_with_backing(const fs::path& path, const std::string& backing,
                             const std::string& format) {
  std::vector<std::byte> file = testing::build_qcow2(3).file;
  // Backing format extension right after the 104-byte header, then the end marker; the name
  // in the free part of the first cluster.
  store_be<uint32_t>(&file[104], 0xe2792aca);
  store_be<uint32_t>(&file[108], static_cast<uint32_t>(format.size()));
  std::memcpy(&file[112], format.data(), format.size());
  size_t end = 112 + (format.size() + 7) / 8 * 8;
  store_be<uint64_t>(&file[end], 0);
  store_be<uint64_t>(&file[8], 256);
  store_be<uint32_t>(&file[16], static_cast<uint32_t>(backing.size()));
  std::memcpy(&file[256], backing.data(), backing.size());
  write_bytes(path, file);
}

// A dynamic VHDX (1 MiB blocks) with BAT entry `index` set to `entry`.
fs::path make_vhdx_with_bat_entry(const fs::path& path, uint64_t index, uint64_t entry) {
  VhdxOptions options;
  options.block_size = 1u << 20;
  EXPECT_TRUE(create_vhdx(path, 8u << 20, options));
  uint64_t bat_offset = 0;
  {
    auto file = HostFile::open(path.string(), HostFile::Mode::kRead);
    int slot = 0;
    auto header = vhdx::read_current_header(*file, slot);
    EXPECT_TRUE(header);
    vhdx::FileView view(*file, nullptr);
    auto parsed = vhdx::parse_image(view, *header, slot);
    EXPECT_TRUE(parsed);
    if (parsed) bat_offset = parsed->layout.bat_offset;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  std::array<std::byte, 8> bytes{};
  store_le<uint64_t>(bytes.data(), entry);
  EXPECT_EQ(::pwrite(fd, bytes.data(), 8, static_cast<off_t>(bat_offset + index * 8)), 8);
  ::close(fd);
  return path;
}

void make_vmdk_descriptor(const fs::path& path, const std::string& extent_line) {
  std::ofstream(path) << "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
                      << extent_line << "\n";
}

struct Outcome {
  bool exited = false;  // false: killed by a signal (crash, abort, alarm)
  int signal = 0;
  std::string report;   // one line per operation: "info: ok" or "info: error: ..."
};

// Runs every read-only path on the image in a child under the address-space limit.
Outcome run_limited(const fs::path& image, const fs::path& output) {
  int pipe_fds[2];
  EXPECT_EQ(::pipe(pipe_fds), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(pipe_fds[0]);
    rlimit limit{kAddressSpaceLimit, kAddressSpaceLimit};
    ::setrlimit(RLIMIT_AS, &limit);
    ::alarm(kSecondsPerCase);
    std::string report;
    auto note = [&](std::string_view op, const auto& result) {
      report += fmt::format("{}: {}\n", op, result ? "ok" : "error: " + result.error().message());
    };
    auto format = detect_format(image.string());
    note("detect", format);
    if (format) {
      note("info", inspect_image(**format, image.string()));
      auto checked = check_image(**format, image.string(), false);
      if (checked && !checked->clean()) {
        report += "check: problems: " + checked->problems.front().message + "\n";
      } else {
        note("check", checked);
      }
      auto opened = open_image(image.string(), false);
      note("open", opened);
      opened = {};
      ConvertOptions options;
      options.format = "raw";
      note("convert", convert_image(image.string(), output.string(), options, {}));
    }
    (void)!::write(pipe_fds[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  Outcome outcome;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) outcome.report.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  outcome.exited = WIFEXITED(status);
  outcome.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return outcome;
}

struct HostileCase {
  std::string name;
  // Makes the image in the folder and returns its path.
  std::function<fs::path(const fs::path& dir)> make;
  // Every operation from `open` on must fail with a message holding this.
  std::string expected_error;
};

std::vector<HostileCase> hostile_cases() {
  std::vector<HostileCase> cases;
  // Issue 16 hole 3: a dynamic VHD whose 4M-entry BAT is a file hole (every entry 0, i.e.
  // "allocated at offset 0"): 8 KiB on disk, and it once cost ~252 bytes of memory per entry.
  cases.push_back({"vhd_bat_is_a_hole", [](const fs::path& dir) {
                     MadeVhd made = make_dynamic_vhd(dir / "hole.vhd", 2ull << 30, 512);
                     int fd = ::open(made.path.c_str(), O_RDWR | O_CLOEXEC);
                     EXPECT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                           static_cast<off_t>(made.bat_offset),
                                           static_cast<off_t>(uint64_t{made.entries} * 4)),
                               0);
                     ::close(fd);
                     return made.path;
                   },
                   "overlaps the footer copy"});
  cases.push_back({"vhd_bat_entry_past_the_end", [](const fs::path& dir) {
                     MadeVhd made = make_dynamic_vhd(dir / "past.vhd", 8 << 20, 1 << 20);
                     patch_be32(made.path, made.bat_offset + 4, 0x7fffff00);
                     return made.path;
                   },
                   "past the end"});
  cases.push_back({"vhd_bat_entry_into_the_bat", [](const fs::path& dir) {
                     MadeVhd made = make_dynamic_vhd(dir / "meta.vhd", 8 << 20, 1 << 20);
                     patch_be32(made.path, made.bat_offset,
                                static_cast<uint32_t>(made.bat_offset / 512));
                     return made.path;
                   },
                   "BAT entry 0"});
  cases.push_back({"vhd_entries_all_on_one_block", [](const fs::path& dir) {
                     MadeVhd made = make_dynamic_vhd(dir / "same.vhd", 8 << 20, 1 << 20);
                     auto opened = open_image(made.path.string(), true);
                     std::vector<std::byte> data(512, std::byte{1});
                     EXPECT_TRUE((*opened)->write(0, data));
                     opened = {};
                     auto image = VhdImage::open(made.path.string(), {});
                     uint32_t sector = (*image)->bat()[0];
                     image = {};
                     for (uint32_t i = 1; i < made.entries; ++i) {
                       patch_be32(made.path, made.bat_offset + uint64_t{i} * 4, sector);
                     }
                     return made.path;
                   },
                   "overlaps the block of BAT entry"});
  cases.push_back({"vhdx_bat_entry_past_the_end", [](const fs::path& dir) {
                     // PAYLOAD_BLOCK_FULLY_PRESENT (6) at 1 TiB in a file of a few MiB.
                     return make_vhdx_with_bat_entry(dir / "past.vhdx", 1, (1ull << 40) | 6);
                   },
                   "outside the file"});
  cases.push_back({"vhdx_bat_entry_into_the_header", [](const fs::path& dir) {
                     return make_vhdx_with_bat_entry(dir / "meta.vhdx", 0, 6);
                   },
                   "overlaps"});
  cases.push_back({"vhdx_parent_through_dotdot", [](const fs::path& dir) {
                     fs::create_directory(dir / "sub");
                     EXPECT_TRUE(create_vhdx(dir / "parent.vhdx", 8u << 20));
                     EXPECT_TRUE(create_vhdx_differencing(dir / "sub" / "child.vhdx",
                                                          dir / "parent.vhdx"));
                     return dir / "sub" / "child.vhdx";
                   },
                   "outside the image's folder"});
  cases.push_back({"vhdx_parent_loop", [](const fs::path& dir) {
                     // The parent is replaced by a copy of its child: the chain points at itself.
                     EXPECT_TRUE(create_vhdx(dir / "parent.vhdx", 8u << 20));
                     EXPECT_TRUE(create_vhdx_differencing(dir / "child.vhdx", dir / "parent.vhdx"));
                     fs::copy_file(dir / "child.vhdx", dir / "parent.vhdx",
                                   fs::copy_options::overwrite_existing);
                     return dir / "child.vhdx";
                   },
                   "parent"});
  // References that leave the image's folder or are not regular files.
  cases.push_back({"vhd_parent_is_etc_passwd", [](const fs::path& dir) {
                     make_vhd_child(dir / "child.vhd", "/etc/passwd");
                     return dir / "child.vhd";
                   },
                   "outside the image's folder"});
  cases.push_back({"vhd_parent_through_dotdot", [](const fs::path& dir) {
                     fs::create_directory(dir / "sub");
                     make_dynamic_vhd(dir / "base.vhd", 4 << 20, 1 << 20);
                     make_vhd_child(dir / "sub" / "child.vhd", (dir / "base.vhd").string());
                     return dir / "sub" / "child.vhd";
                   },
                   "outside the image's folder"});
  cases.push_back({"vhd_parent_is_a_fifo", [](const fs::path& dir) {
                     ::mkfifo((dir / "pipe.vhd").c_str(), 0600);
                     make_vhd_child(dir / "child.vhd", (dir / "pipe.vhd").string());
                     return dir / "child.vhd";
                   },
                   "not a regular file"});
  cases.push_back({"qcow2_backing_etc_passwd", [](const fs::path& dir) {
                     make_qcow2_with_backing(dir / "top.qcow2", "/etc/passwd", "raw");
                     return dir / "top.qcow2";
                   },
                   "outside the image's folder"});
  cases.push_back({"qcow2_backing_dotdot_etc_passwd", [](const fs::path& dir) {
                     make_qcow2_with_backing(dir / "top.qcow2", "../../../../../../etc/passwd",
                                             "raw");
                     return dir / "top.qcow2";
                   },
                   "outside the image's folder"});
  cases.push_back({"qcow2_backing_symlink_to_etc_passwd", [](const fs::path& dir) {
                     fs::create_symlink("/etc/passwd", dir / "base.raw");
                     make_qcow2_with_backing(dir / "top.qcow2", "base.raw", "raw");
                     return dir / "top.qcow2";
                   },
                   "outside the image's folder"});
  cases.push_back({"qcow2_backing_fifo", [](const fs::path& dir) {
                     ::mkfifo((dir / "pipe").c_str(), 0600);
                     make_qcow2_with_backing(dir / "top.qcow2", "pipe", "raw");
                     return dir / "top.qcow2";
                   },
                   "not a regular file"});
  cases.push_back({"qcow2_backing_dev_null", [](const fs::path& dir) {
                     make_qcow2_with_backing(dir / "top.qcow2", "/dev/null", "raw");
                     return dir / "top.qcow2";
                   },
                   "outside the image's folder"});
  cases.push_back({"qcow2_backing_symlink_to_dev_null", [](const fs::path& dir) {
                     fs::create_symlink("/dev/null", dir / "null.raw");
                     make_qcow2_with_backing(dir / "top.qcow2", "null.raw", "raw");
                     return dir / "top.qcow2";
                   },
                   "outside the image's folder"});
  cases.push_back({"qcow2_backing_folder", [](const fs::path& dir) {
                     fs::create_directory(dir / "folder");
                     make_qcow2_with_backing(dir / "top.qcow2", "folder", "raw");
                     return dir / "top.qcow2";
                   },
                   "not a regular file"});
  cases.push_back({"qcow2_backing_without_format_is_not_probed", [](const fs::path& dir) {
                     write_bytes(dir / "base.raw", std::vector<std::byte>(65536));
                     make_qcow2_with_backing(dir / "top.qcow2", "base.raw", "");
                     return dir / "top.qcow2";
                   },
                   "does not guess it"});
  cases.push_back({"qcow2_backing_loop", [](const fs::path& dir) {
                     make_qcow2_with_backing(dir / "top.qcow2", "top.qcow2", "qcow2");
                     return dir / "top.qcow2";
                   },
                   "deeper than"});
  cases.push_back({"qcow2_l1_claims_huge_table", [](const fs::path& dir) {
                     std::vector<std::byte> file = testing::build_qcow2(3).file;
                     store_be<uint64_t>(&file[24], 1ull << 50);  // virtual size
                     store_be<uint32_t>(&file[36], 1u << 22);    // l1 entries: 32 MiB
                     write_bytes(dir / "huge.qcow2", file);
                     return dir / "huge.qcow2";
                   },
                   "L1 table"});
  cases.push_back({"vmdk_extent_etc_passwd", [](const fs::path& dir) {
                     make_vmdk_descriptor(dir / "d.vmdk", "RW 8 FLAT \"/etc/passwd\" 0");
                     return dir / "d.vmdk";
                   },
                   "outside the image's folder"});
  cases.push_back({"vmdk_extent_symlink_out", [](const fs::path& dir) {
                     fs::create_symlink("/etc/passwd", dir / "flat.raw");
                     make_vmdk_descriptor(dir / "d.vmdk", "RW 8 FLAT \"flat.raw\" 0");
                     return dir / "d.vmdk";
                   },
                   "outside the image's folder"});
  cases.push_back({"vmdk_extent_fifo", [](const fs::path& dir) {
                     ::mkfifo((dir / "flat.raw").c_str(), 0600);
                     make_vmdk_descriptor(dir / "d.vmdk", "RW 8 FLAT \"flat.raw\" 0");
                     return dir / "d.vmdk";
                   },
                   "not a regular file"});
  cases.push_back({"vmdk_grain_directory_claims_huge_capacity", [](const fs::path& dir) {
                     std::vector<std::byte> file = testing::build_vmdk_sparse(false).file;
                     store_le<uint64_t>(&file[12], 1ull << 47);  // capacity in sectors
                     write_bytes(dir / "huge.vmdk", file);
                     return dir / "huge.vmdk";
                   },
                   "cannot fit in the file"});
  return cases;
}

class HostileImages : public ::testing::TestWithParam<HostileCase> {};

TEST_P(HostileImages, FailClearlyWithBoundedMemoryAndTime) {
  TempDir dir;
  fs::path image = GetParam().make(dir.path());
  Outcome outcome = run_limited(image, dir / "out.raw");
  ASSERT_TRUE(outcome.exited) << "killed by signal " << outcome.signal << " (crash, abort on "
                              << "allocation, or a hang past " << kSecondsPerCase << " s)\n"
                              << outcome.report;
  // open and convert fail, naming the problem in one line.
  for (std::string_view op : {"open: ", "convert: "}) {
    auto at = outcome.report.find(op);
    ASSERT_NE(at, std::string::npos) << outcome.report;
    std::string line = outcome.report.substr(at, outcome.report.find('\n', at) - at);
    EXPECT_NE(line.find("error: "), std::string::npos) << line;
    EXPECT_NE(line.find(GetParam().expected_error), std::string::npos) << line;
  }
  // No referenced host file's bytes ever appear (a qcow2 over /etc/passwd printed it).
  EXPECT_EQ(outcome.report.find("root:"), std::string::npos) << outcome.report;
  EXPECT_FALSE(fs::exists(dir / "out.raw")) << "a failed convert left its output";
}

INSTANTIATE_TEST_SUITE_P(Generated, HostileImages, ::testing::ValuesIn(hostile_cases()),
                         [](const auto& test_case) { return test_case.param.name; });

// The reference policy allows what the user allows, and the same file opens then.
TEST(HostileImagesPolicy, AllowedFoldersOpenTheSameReference) {
  TempDir dir;
  fs::create_directory(dir / "sub");
  make_dynamic_vhd(dir / "base.vhd", 4 << 20, 1 << 20);
  ASSERT_TRUE(create_differencing((dir / "sub" / "child.vhd").string(),
                                  (dir / "base.vhd").string(), false));
  EXPECT_FALSE(open_image((dir / "sub" / "child.vhd").string(), false));
  ImageAccess above;
  above.references.allow_parent_folder = true;
  EXPECT_TRUE(open_image((dir / "sub" / "child.vhd").string(), false, above));
  ImageAccess listed;
  listed.references.allowed_folders = {dir.path()};
  EXPECT_TRUE(open_image((dir / "sub" / "child.vhd").string(), false, listed));
  // A symlink inside the folder to a file inside it is fine.
  write_bytes(dir / "base.raw", std::vector<std::byte>(65536, std::byte{7}));
  fs::create_symlink("base.raw", dir / "link.raw");
  make_qcow2_with_backing(dir / "top.qcow2", "link.raw", "raw");
  EXPECT_TRUE(open_image((dir / "top.qcow2").string(), false));
}

// A VHD parent candidate with the wrong unique id: the error must not print either id (the
// candidate may be another user's disk; its id is what a crafted child needs).
TEST(HostileImagesPolicy, ParentIdMismatchDisclosesNoIds) {
  TempDir dir;
  make_dynamic_vhd(dir / "victim.vhd", 4 << 20, 1 << 20);
  make_vhd_child(dir / "child.vhd", (dir / "victim.vhd").string());
  auto victim = VhdImage::open((dir / "victim.vhd").string(), {});
  ASSERT_TRUE(victim);
  std::string id = vhd::format_uuid((*victim)->footer().unique_id);
  victim->reset();
  auto opened = open_image((dir / "child.vhd").string(), false);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find("not this disk's parent"), std::string::npos)
      << opened.error().message();
  EXPECT_EQ(opened.error().message().find(id), std::string::npos) << opened.error().message();
  auto bytes = read_bytes(dir / "victim.vhd");
  EXPECT_FALSE(bytes.empty());
}

}  // namespace
}  // namespace lamina::storage
