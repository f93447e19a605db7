// The image tables of the store (schema 8): images by digest, and names.
#include <sqlite3.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "lib/base/status_macros.h"
#include "lib/store/sqlite_util.h"
#include "lib/store/store.h"

namespace smolvm::store {
namespace {

constexpr const char* kSelectImages =
    "SELECT digest, owner, source, manifest, size_bytes, created_at FROM images ";

absl::StatusOr<ImageRecord> ReadImageRow(sqlite3_stmt* stmt) {
  ImageRecord image;
  image.digest = ColumnString(stmt, 0);
  image.owner = ColumnString(stmt, 1);
  image.source = ColumnString(stmt, 2);
  image.manifest = ColumnString(stmt, 3);
  image.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(stmt, 4));
  image.created_at = absl::FromUnixMicros(sqlite3_column_int64(stmt, 5));
  return image;
}

// Fills `names` of each image from image_names.
absl::Status AttachNames(sqlite3* db, std::vector<ImageRecord>& images, absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt,
                          Prepare(db, "SELECT name, digest FROM image_names ORDER BY name", what));
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    const std::string digest = ColumnString(stmt.get(), 1);
    for (auto& image : images) {
      if (image.digest == digest) image.names.push_back(ColumnString(stmt.get(), 0));
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(db, what);
  return absl::OkStatus();
}

// Inserts name -> digest unless the name exists: then OK when it already
// points at `digest`, ALREADY_EXISTS otherwise.
absl::Status InsertName(sqlite3* db, const std::string& name, const std::string& digest,
                        absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt current, Prepare(db, "SELECT digest FROM image_names WHERE name = ?1", what, name));
  int rc = sqlite3_step(current.get());
  if (rc == SQLITE_ROW) {
    const std::string other = ColumnString(current.get(), 0);
    if (other == digest) return absl::OkStatus();
    return absl::AlreadyExistsError(absl::StrCat(
        "image name \"", name, "\" is already taken by ", other,
        ": choose another name, or delete or untag that image first"));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, what);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt insert,
      Prepare(db, "INSERT INTO image_names (name, digest) VALUES (?1, ?2)", what, name, digest));
  rc = sqlite3_step(insert.get());
  if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) return NotFound("image", digest);
  if (rc != SQLITE_DONE) return SqliteError(db, what);
  return absl::OkStatus();
}

}  // namespace

absl::Status Store::InsertImage(const ImageRecord& image, const std::string& name) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("InsertImage"));
  const std::string what = absl::StrCat("insert image ", image.digest, " as ", name);
  absl::MutexLock lock(&mu_);
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", what));
  bool committed = false;
  absl::Cleanup rollback = [&] {
    if (!committed) (void)Exec(db_, "ROLLBACK", what);
  };
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt insert,
      Prepare(db_,
              "INSERT INTO images (digest, owner, source, manifest, size_bytes, created_at) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
              what, image.digest, image.owner, image.source, image.manifest,
              static_cast<int64_t>(image.size_bytes), absl::ToUnixMicros(image.created_at)));
  SMOLVM_RETURN_IF_ERROR(StepWrite(db_, insert.get(), "image", image.digest, what));
  if (!name.empty()) SMOLVM_RETURN_IF_ERROR(InsertName(db_, name, image.digest, what));
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "COMMIT", what));
  committed = true;
  return absl::OkStatus();
}

absl::Status Store::AddImageName(const std::string& name, const std::string& digest) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("AddImageName"));
  const std::string what = absl::StrCat("name image ", digest, " ", name);
  absl::MutexLock lock(&mu_);
  return InsertName(db_, name, digest, what);
}

absl::Status Store::RemoveImageName(const std::string& name) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("RemoveImageName"));
  const std::string what = absl::StrCat("remove image name ", name);
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt,
                          Prepare(db_, "DELETE FROM image_names WHERE name = ?1", what, name));
  return StepWrite(db_, stmt.get(), "image name", name, what);
}

absl::StatusOr<std::string> Store::ResolveImageName(const std::string& name) {
  const std::string what = absl::StrCat("resolve image name ", name);
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt,
                          Prepare(db_, "SELECT digest FROM image_names WHERE name = ?1", what, name));
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_ROW) return ColumnString(stmt.get(), 0);
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  return NotFound("image", name);
}

absl::StatusOr<ImageRecord> Store::GetImage(const std::string& digest) {
  const std::string what = absl::StrCat("get image ", digest);
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, absl::StrCat(kSelectImages, "WHERE digest = ?1"), what, digest));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<ImageRecord> rows,
                          ReadRows(db_, stmt.get(), what, &ReadImageRow));
  if (rows.empty()) return NotFound("image", digest);
  SMOLVM_RETURN_IF_ERROR(AttachNames(db_, rows, what));
  return std::move(rows.front());
}

absl::StatusOr<std::vector<ImageRecord>> Store::AllImages() {
  constexpr absl::string_view what = "list images";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, absl::StrCat(kSelectImages, "ORDER BY created_at, digest"), what));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<ImageRecord> rows,
                          ReadRows(db_, stmt.get(), what, &ReadImageRow));
  SMOLVM_RETURN_IF_ERROR(AttachNames(db_, rows, what));
  return rows;
}

absl::Status Store::DeleteImage(const std::string& digest) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("DeleteImage"));
  const std::string what = absl::StrCat("delete image ", digest);
  absl::MutexLock lock(&mu_);
  // image_names rows go with it (ON DELETE CASCADE; foreign_keys is on).
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt,
                          Prepare(db_, "DELETE FROM images WHERE digest = ?1", what, digest));
  return StepWrite(db_, stmt.get(), "image", digest, what);
}

}  // namespace smolvm::store
