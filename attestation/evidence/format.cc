#include "attestation/evidence/format.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstring>

namespace sovguard::attestation::evidence {

Sha256Digest LeafHash(std::span<const uint8_t> nonce, const Sha256Digest& snapshot_sha256,
                      std::span<const uint8_t> salt) {
  if (nonce.size() < kMinNonce || nonce.size() > kMaxNonce)
    throw AttestationError("nonce must be " + std::to_string(kMinNonce) + ".." +
                           std::to_string(kMaxNonce) + " bytes, got " +
                           std::to_string(nonce.size()));
  if (salt.size() != kLeafSaltSize)
    throw AttestationError("leaf salt must be " + std::to_string(kLeafSaltSize) + " bytes, got " +
                           std::to_string(salt.size()));
  Bytes msg;
  msg.reserve(1 + kLeafLabel.size() + 1 + 4 + nonce.size() + 32 + salt.size());
  msg.push_back(kLeafPrefix);
  msg.insert(msg.end(), kLeafLabel.begin(), kLeafLabel.end());
  msg.push_back(0);
  PutBe(msg, nonce.size(), 4);
  msg.insert(msg.end(), nonce.begin(), nonce.end());
  msg.insert(msg.end(), snapshot_sha256.begin(), snapshot_sha256.end());
  msg.insert(msg.end(), salt.begin(), salt.end());
  return Sha256(msg);
}

Sha256Digest NodeHash(const Sha256Digest& left, const Sha256Digest& right) {
  std::array<uint8_t, 65> msg;
  msg[0] = kNodePrefix;
  std::memcpy(msg.data() + 1, left.data(), 32);
  std::memcpy(msg.data() + 33, right.data(), 32);
  return Sha256(msg);
}

namespace {

void CheckTreeSize(size_t size) {
  if (size == 0 || size > kMaxBatchLeaves)
    throw AttestationError("a Merkle tree has 1.." + std::to_string(kMaxBatchLeaves) +
                           " leaves, not " + std::to_string(size));
}

}  // namespace

// Adjacent nodes are paired left to right and an unpaired last node moves up unchanged: the same
// tree as MTH's largest-power-of-two split.
MerkleTree::MerkleTree(std::span<const Sha256Digest> leaves) {
  CheckTreeSize(leaves.size());
  levels_.emplace_back(leaves.begin(), leaves.end());
  while (levels_.back().size() > 1) {
    const auto& below = levels_.back();
    std::vector<Sha256Digest> up;
    up.reserve((below.size() + 1) / 2);
    for (size_t i = 0; i + 1 < below.size(); i += 2) up.push_back(NodeHash(below[i], below[i + 1]));
    if (below.size() % 2) up.push_back(below.back());
    levels_.push_back(std::move(up));
  }
}

std::vector<Sha256Digest> MerkleTree::Path(size_t index) const {
  if (index >= levels_.front().size())
    throw AttestationError("leaf " + std::to_string(index) + " of a tree of " +
                           std::to_string(levels_.front().size()));
  std::vector<Sha256Digest> path;
  for (size_t l = 0; l + 1 < levels_.size(); ++l, index /= 2)
    if ((index ^ 1) < levels_[l].size()) path.push_back(levels_[l][index ^ 1]);
  return path;
}

size_t InclusionPathLength(size_t index, size_t size) {
  CheckTreeSize(size);
  if (index >= size)
    throw AttestationError("leaf " + std::to_string(index) + " of a tree of " +
                           std::to_string(size));
  // RFC 9162 2.1.3.2 with the hashing left out: one path entry per step until sn reaches 0.
  size_t fn = index, sn = size - 1, n = 0;
  while (sn != 0) {
    if ((fn & 1) == 0 && fn == sn)
      while ((fn & 1) == 0 && fn != 0) fn >>= 1, sn >>= 1;
    if (sn == 0) break;
    ++n;
    fn >>= 1, sn >>= 1;
  }
  return n;
}

Sha256Digest RootFromInclusionPath(const Sha256Digest& leaf, size_t index, size_t size,
                                   std::span<const Sha256Digest> path) {
  if (path.size() != InclusionPathLength(index, size))
    throw AttestationError("audit path of " + std::to_string(path.size()) + " hashes for leaf " +
                           std::to_string(index) + " of " + std::to_string(size));
  // RFC 9162 2.1.3.2.
  size_t fn = index, sn = size - 1;
  Sha256Digest r = leaf;
  for (const auto& p : path) {
    if ((fn & 1) || fn == sn) {
      r = NodeHash(p, r);
      while ((fn & 1) == 0 && fn != 0) fn >>= 1, sn >>= 1;
    } else {
      r = NodeHash(r, p);
    }
    fn >>= 1, sn >>= 1;
  }
  return r;
}

std::string SerializeSnapshot(const v1::EnforcementSnapshot& snapshot) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    if (!snapshot.SerializeToCodedStream(&cos))
      throw AttestationError("cannot serialize the enforcement snapshot");
  }
  return out;
}

std::string ToJson(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(msg, &out, opts);
  if (!st.ok()) throw AttestationError("JSON rendering failed: " + st.ToString());
  return out;
}

void FromJson(std::string_view json, google::protobuf::Message& msg) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;  // a field we do not know is an error, not ignored
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &msg, opts);
  if (!st.ok()) throw AttestationError("evidence JSON: " + st.ToString());
}

std::vector<std::string> ExportForCheckquote(const v1::Evidence& ev,
                                             const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto& q = ev.quote();
  if (q.attest().empty() || q.signature().empty() || ev.ak().public_pem().empty())
    throw AttestationError("evidence has no quote, signature or AK public key");
  WriteFileAtomic(dir / "ak.pem", ev.ak().public_pem());
  WriteFileAtomic(dir / "quote.msg", q.attest());
  WriteFileAtomic(dir / "quote.sig", q.signature());
  // tpm2-tools' "serialized" PCR file (what tpm2_quote -o writes): the host-endian C structs
  // TPML_PCR_SELECTION, UINT32 number of lists, then TPML_DIGEST lists of at most 8 digests in
  // ascending PCR order. (The -l selection-string variant mishandles more than 7 PCRs in 5.4.)
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  std::vector<TPML_DIGEST> lists;
  for (int i = 0; i < q.pcrs_size(); ++i) {
    const auto& p = q.pcrs(i);
    if (p.sha256().size() != 32)
      throw AttestationError("quote.pcrs[" + std::to_string(i) + "].sha256 is not 32 bytes");
    if (p.index() > 23 || (i > 0 && p.index() <= q.pcrs(i - 1).index()))
      throw AttestationError("quote.pcrs must be PCRs 0-23 in ascending index order");
    sel.pcrSelections[0].pcrSelect[p.index() / 8] |= static_cast<uint8_t>(1u << (p.index() % 8));
    if (lists.empty() || lists.back().count == 8) lists.push_back(TPML_DIGEST{});
    auto& d = lists.back().digests[lists.back().count++];
    d.size = 32;
    std::memcpy(d.buffer, p.sha256().data(), 32);
  }
  std::string pcrs(reinterpret_cast<const char*>(&sel), sizeof sel);
  const auto nlists = static_cast<uint32_t>(lists.size());
  pcrs.append(reinterpret_cast<const char*>(&nlists), sizeof nlists);
  for (const auto& l : lists) pcrs.append(reinterpret_cast<const char*>(&l), sizeof l);
  WriteFileAtomic(dir / "quote.pcrs", pcrs);
  const std::string qhex = ToHex(std::span(
      reinterpret_cast<const uint8_t*>(q.qualifying_data().data()), q.qualifying_data().size()));
  WriteFileAtomic(dir / "qualifying.hex", qhex);
  return {"-u", (dir / "ak.pem").string(),
          "-m", (dir / "quote.msg").string(),
          "-s", (dir / "quote.sig").string(),
          "-f", (dir / "quote.pcrs").string(),
          "-g", "sha256",
          "-q", qhex};
}

}  // namespace sovguard::attestation::evidence
