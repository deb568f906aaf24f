// MappedFile: a file mapped into memory and handed to JS as external ArrayBuffers, without a copy.
//   new MappedFile(path)        maps the whole file; errors name the path and the OS reason
//   .byteLength, .path, .disposed
//   .buffer(offset?, length?)   a new ArrayBuffer over [offset, offset + length) of the mapping
//   .dispose()                  detaches every ArrayBuffer handed out, then unmaps
//   .checkUnchanged()           throws ERR_FILE_CHANGED if the file was truncated or rewritten since
// The mapping is private copy-on-write (PROT_READ | PROT_WRITE, MAP_PRIVATE): a script that
// writes into a view gets its own copy of that page instead of a segfault, and the file is never
// modified. Because the ArrayBuffers are detached before the unmap, JS code that kept a view sees
// an empty array afterwards, never freed memory. Native jobs pin the mapping (pin_mapped), so an
// unmap requested while one runs waits for its end. GC finalizers are only the safety net.
#include "addon/mmap.h"

#include <napi.h>
#include <uv.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "addon/op.h"

namespace ernie::addon {
namespace {

void unmap_region(void* base, size_t length) {
#ifdef _WIN32
  (void)length;
  UnmapViewOfFile(base);
#else
  munmap(base, length);
#endif
}

class Mapping;
// Live mappings by base address, for pin_mapped.
std::mutex registry_mu;
std::map<uintptr_t, std::weak_ptr<Mapping>>& registry() {
  static auto* m = new std::map<uintptr_t, std::weak_ptr<Mapping>>();  // never destroyed: used by late finalizers
  return *m;
}

// One mapping, owned jointly by its MappedFile, every ArrayBuffer over it and every pin. Unmapped
// when retired (dispose) with no pin left, or when the last owner lets go.
class Mapping {
 public:
  // `fd`: the mapped file, kept open to notice changes to it (-1 where not watched: Windows,
  // which refuses to truncate a mapped file anyway).
  Mapping(uint8_t* base, size_t length, std::string path, int fd) : base_(base), length_(length), path_(std::move(path)), fd_(fd) {
#ifndef _WIN32
    if (fd_ >= 0 && fstat(fd_, &at_map_) != 0) close_fd();
#endif
  }
  ~Mapping() {
    std::lock_guard<std::mutex> lock(mu_);
    unmap_locked();
  }

  const std::string& path() const { return path_; }

  // What happened to the file since it was mapped, or "" if nothing: truncated or rewritten in
  // place. Reading a page past a new, shorter end raises SIGBUS; callers ask before they read.
  // A file replaced by a rename is no change here: the mapping keeps the old file's bytes.
  std::string change() {
#ifndef _WIN32
    std::lock_guard<std::mutex> lock(mu_);
    struct stat now;
    if (fd_ < 0 || fstat(fd_, &now) != 0) return "";
    if (now.st_size != at_map_.st_size)
      return std::string(now.st_size < at_map_.st_size ? "truncated" : "grown") + " from " + std::to_string(at_map_.st_size) +
             " to " + std::to_string(now.st_size) + " bytes";
    if (now.st_mtim.tv_sec != at_map_.st_mtim.tv_sec || now.st_mtim.tv_nsec != at_map_.st_mtim.tv_nsec)
      return "rewritten in place (its modification time changed)";
#endif
    return "";
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  uint8_t* base() const { return base_; }
  size_t length() const { return length_; }

  // No JS view can reach the memory any more: unmap as soon as no native job holds a pin.
  void retire() {
    std::lock_guard<std::mutex> lock(mu_);
    retired_ = true;
    if (pins_ == 0) unmap_locked();
  }
  bool pin() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!mapped_) return false;
    ++pins_;
    return true;
  }
  void unpin() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--pins_ == 0 && retired_) unmap_locked();
  }

 private:
  void close_fd() {
#ifndef _WIN32
    if (fd_ >= 0) ::close(fd_);
#endif
    fd_ = -1;
  }
  void unmap_locked() {
    if (!mapped_) return;
    mapped_ = false;
    close_fd();
    {
      std::lock_guard<std::mutex> lock(registry_mu);  // order: mapping, then registry
      registry().erase(reinterpret_cast<uintptr_t>(base_));
    }
    unmap_region(base_, length_);
  }

  std::mutex mu_;
  uint8_t* base_;
  size_t length_;
  std::string path_;
  int fd_;
#ifndef _WIN32
  struct stat at_map_ {};
#endif
  size_t pins_ = 0;
  bool retired_ = false;
  bool mapped_ = true;
};

// The ArrayBuffers one MappedFile handed out, held weakly so dispose() can detach those still alive.
using ViewTable = std::map<uint64_t, Napi::Reference<Napi::ArrayBuffer>>;

// What each external ArrayBuffer keeps alive, by view id. Looked up by id rather than owned by the
// finalizer hint, so a finalizer that runs early (a failed creation) or late cannot free it twice.
struct ViewOwner {
  std::shared_ptr<Mapping> mapping;
  std::weak_ptr<ViewTable> table;
};
std::mutex owners_mu;
std::map<uint64_t, ViewOwner>& owners() {
  static auto* m = new std::map<uint64_t, ViewOwner>();
  return *m;
}
uint64_t next_view_id = 1;  // guarded by owners_mu

// Runs on the JS thread once V8 releases an ArrayBuffer's memory (GC or detach).
void release_view(napi_env, void*, void* hint) {
  const auto id = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(hint));
  ViewOwner owner;
  {
    std::lock_guard<std::mutex> lock(owners_mu);
    auto it = owners().find(id);
    if (it == owners().end()) return;
    owner = std::move(it->second);
    owners().erase(it);
  }
  if (auto table = owner.table.lock()) table->erase(id);
  // `owner.mapping` is released here, possibly unmapping.
}

// Errors as Node's fs module shapes them: code (ENOENT...), errno, syscall, path.
[[noreturn]] void throw_os_error(Napi::Env env, const std::string& path, const char* syscall, int sys_err) {
  const int uv = uv_translate_sys_error(sys_err);
  Napi::Error e = Napi::Error::New(
      env, std::string("MappedFile: cannot map '") + path + "': " + uv_err_name(uv) + ": " + uv_strerror(uv) + " (" + syscall + ")");
  e.Set("code", Napi::String::New(env, uv_err_name(uv)));
  e.Set("errno", Napi::Number::New(env, uv));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("path", Napi::String::New(env, path));
  throw e;
}

[[noreturn]] void throw_file_error(Napi::Env env, const std::string& path, const char* code, const std::string& why) {
  Napi::Error e = Napi::Error::New(env, "MappedFile: cannot map '" + path + "': " + why);
  e.Set("code", Napi::String::New(env, code));
  e.Set("path", Napi::String::New(env, path));
  throw e;
}

void throw_if_changed(Napi::Env env, Mapping& mapping) {
  const std::string change = mapping.change();
  if (change.empty()) return;
  Napi::Error e = Napi::Error::New(env, "'" + mapping.path() + "' changed on disk while in use (" + change +
                                            "); its memory-mapped bytes can no longer be read safely. Load it again, or "
                                            "load with mmap: false to read a private copy that later changes cannot touch");
  e.Set("code", Napi::String::New(env, "ERR_FILE_CHANGED"));
  e.Set("path", Napi::String::New(env, mapping.path()));
  throw e;
}

#ifdef _WIN32
std::wstring widen(const std::string& s) {
  int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), int(s.size()), nullptr, 0);
  std::wstring w(size_t(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, s.data(), int(s.size()), w.data(), n);
  return w;
}

std::shared_ptr<Mapping> map_file(Napi::Env env, const std::string& path) {
  const std::wstring wpath = widen(path);
  DWORD attrs = GetFileAttributesW(wpath.c_str());
  if (attrs == INVALID_FILE_ATTRIBUTES) throw_os_error(env, path, "open", int(GetLastError()));
  if (attrs & FILE_ATTRIBUTE_DIRECTORY) throw_file_error(env, path, "EISDIR", "EISDIR: illegal operation on a directory");
  HANDLE file = CreateFileW(wpath.c_str(), GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_DELETE, nullptr, OPEN_EXISTING,
                            FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) throw_os_error(env, path, "open", int(GetLastError()));
  LARGE_INTEGER size;
  if (GetFileType(file) != FILE_TYPE_DISK || !GetFileSizeEx(file, &size)) {
    CloseHandle(file);
    throw_file_error(env, path, "ERR_NOT_A_FILE", "not a regular file");
  }
  if (size.QuadPart == 0) {
    CloseHandle(file);
    throw_file_error(env, path, "ERR_EMPTY_FILE", "the file is empty");
  }
  HANDLE section = CreateFileMappingW(file, nullptr, PAGE_WRITECOPY, 0, 0, nullptr);
  DWORD err = GetLastError();
  CloseHandle(file);
  if (!section) throw_os_error(env, path, "CreateFileMapping", int(err));
  void* base = MapViewOfFile(section, FILE_MAP_COPY, 0, 0, SIZE_T(size.QuadPart));
  err = GetLastError();
  CloseHandle(section);  // the view keeps the section alive
  if (!base) throw_os_error(env, path, "MapViewOfFile", int(err));
  return std::make_shared<Mapping>(static_cast<uint8_t*>(base), size_t(size.QuadPart), path, -1);
}
#else
std::shared_ptr<Mapping> map_file(Napi::Env env, const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not hang; it is rejected below as not a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw_os_error(env, path, "open", errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw_os_error(env, path, "fstat", err);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw_os_error(env, path, "mmap", EISDIR);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_file_error(env, path, "ERR_NOT_A_FILE", "not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    throw_file_error(env, path, "ERR_EMPTY_FILE", "the file is empty");
  }
  if (uint64_t(st.st_size) > uint64_t(SIZE_MAX)) {
    ::close(fd);
    throw_file_error(env, path, "ERR_FILE_TOO_LARGE", "the file is larger than the address space");
  }
  const size_t length = size_t(st.st_size);
  void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  if (base == MAP_FAILED) {
    ::close(fd);
    throw_os_error(env, path, "mmap", err);
  }
  return std::make_shared<Mapping>(static_cast<uint8_t*>(base), length, path, fd);  // keeps fd, to notice changes
}
#endif

class MappedFile : public Napi::ObjectWrap<MappedFile> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "MappedFile",
                       {
                           InstanceAccessor<&MappedFile::byte_length>("byteLength"),
                           InstanceAccessor<&MappedFile::path>("path"),
                           InstanceAccessor<&MappedFile::disposed>("disposed"),
                           InstanceMethod<&MappedFile::buffer>("buffer"),
                           InstanceMethod<&MappedFile::dispose>("dispose"),
                           InstanceMethod<&MappedFile::check_unchanged>("checkUnchanged"),
                       });
  }

  explicit MappedFile(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MappedFile>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) throw_type_error(env, "MappedFile: 'path' must be a string");
    path_ = info[0].As<Napi::String>().Utf8Value();
    if (path_.empty() || path_.find('\0') != std::string::npos)
      throw_type_error(env, "MappedFile: 'path' must be a non-empty path without NUL characters");
    mapping_ = map_file(env, path_);
    length_ = mapping_->length();
    {
      std::lock_guard<std::mutex> lock(registry_mu);
      registry()[reinterpret_cast<uintptr_t>(mapping_->base())] = mapping_;
    }
    views_ = std::make_shared<ViewTable>();
  }

  // The finalizer path: views still alive keep the mapping; it goes with the last of them.
  ~MappedFile() override = default;

 private:
  Napi::Value byte_length(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), double(length_)); }
  Napi::Value path(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }
  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !mapping_); }

  uint64_t index_arg(const Napi::CallbackInfo& info, size_t i, const char* name, uint64_t fallback, uint64_t max) {
    Napi::Env env = info.Env();
    if (info.Length() <= i || info[i].IsUndefined()) return fallback;
    if (!info[i].IsNumber()) throw_type_error(env, std::string("MappedFile.buffer: '") + name + "' must be an integer");
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > double(max) || d != std::floor(d))
      throw_range_error(env, std::string("MappedFile.buffer: '") + name + "' must be an integer in [0, " +
                                 std::to_string(max) + "], got " + info[i].ToString().Utf8Value());
    return uint64_t(d);
  }

  Napi::Value buffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!mapping_) {
      Napi::Error e = Napi::Error::New(env, "MappedFile: '" + path_ + "' was disposed");
      e.Set("code", Napi::String::New(env, "ERR_DISPOSED"));
      throw e;
    }
    const uint64_t offset = index_arg(info, 0, "offset", 0, length_);
    const uint64_t length = index_arg(info, 1, "length", length_ - offset, length_ - offset);
    if (length == 0) return Napi::ArrayBuffer::New(env, 0);
    uint8_t* data = mapping_->base() + offset;

    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(owners_mu);
      id = next_view_id++;
      owners()[id] = ViewOwner{mapping_, views_};
    }
    napi_value result;
    napi_status status = napi_create_external_arraybuffer(env, data, size_t(length), release_view,
                                                          reinterpret_cast<void*>(uintptr_t(id)), &result);
    if (status == napi_ok) {
      (*views_)[id] = Napi::Weak(Napi::ArrayBuffer(env, result));
      return Napi::Value(env, result);
    }
    // Not created: forget the owner unless the finalizer already ran.
    {
      std::lock_guard<std::mutex> lock(owners_mu);
      owners().erase(id);
    }
    std::string why = "status " + std::to_string(int(status));
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      why = Napi::Value(env, exc).ToString().Utf8Value();
    }
    if (status == napi_no_external_buffers_allowed) {
      // Runtimes with the V8 memory cage (Electron) forbid external memory: copy instead.
      Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, size_t(length));
      std::memcpy(copy.Data(), data, size_t(length));
      return copy;
    }
    throw_range_error(env, "MappedFile.buffer: cannot expose " + std::to_string(length) + " bytes of '" + path_ +
                               "' as an ArrayBuffer: " + why);
  }

  // Throws ERR_FILE_CHANGED when the file was truncated or rewritten since it was mapped: JS
  // checks before it reads views, as native calls do.
  Napi::Value check_unchanged(const Napi::CallbackInfo& info) {
    if (mapping_) throw_if_changed(info.Env(), *mapping_);
    return info.Env().Undefined();
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!mapping_) return env.Undefined();
    // Detach first: afterwards no JS view reaches the memory, whatever the finalizers' timing.
    for (auto& [id, ref] : *views_) {
      Napi::ArrayBuffer ab = ref.Value();
      if (!ab.IsEmpty() && !ab.IsDetached()) ab.Detach();
    }
    views_->clear();
    std::shared_ptr<Mapping> mapping = std::move(mapping_);
    mapping->retire();
    return env.Undefined();
  }

  std::string path_;
  size_t length_ = 0;
  std::shared_ptr<Mapping> mapping_;  // null once disposed
  std::shared_ptr<ViewTable> views_;
};

void export_mapped_file(Napi::Env env, Napi::Object exports) { exports.Set("MappedFile", MappedFile::define(env)); }
[[maybe_unused]] const bool registered = register_exporter(export_mapped_file);

}  // namespace

void check_mapped_unchanged(Napi::Env env, const std::shared_ptr<void>& pin) {
  throw_if_changed(env, *static_cast<Mapping*>(pin.get()));
}

std::shared_ptr<void> pin_mapped(const void* data, size_t bytes) {
  const auto p = reinterpret_cast<uintptr_t>(data);
  std::shared_ptr<Mapping> mapping;
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    auto& reg = registry();
    auto it = reg.upper_bound(p);
    if (it == reg.begin()) return nullptr;
    --it;
    mapping = it->second.lock();
  }
  if (!mapping) return nullptr;
  const auto base = reinterpret_cast<uintptr_t>(mapping->base());
  if (p < base || p - base > mapping->length() || bytes > mapping->length() - (p - base)) return nullptr;
  if (!mapping->pin()) return nullptr;
  return std::shared_ptr<void>(mapping.get(), [mapping](void*) { mapping->unpin(); });
}

}  // namespace ernie::addon
