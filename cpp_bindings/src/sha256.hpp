// SHA-256 (FIPS 180-4) of files and strings, hex digests as Python's hashlib gives them.
#pragma once

#include <cstdint>
#include <string>

namespace tpem::detail {

std::string sha256_hex(const std::string &bytes);
// Throws Error(TPEM_ERR_IO) when the file cannot be read.
std::string sha256_file_hex(const std::string &path);

}  // namespace tpem::detail
