-- Records a partition's new owner before its first batch, unless a newer
-- token is already there; returns the partition when the claim holds. The
-- row lock it takes waits for a batch of the previous owner that is still
-- open (its read locked the row FOR SHARE), and that owner's later batches
-- then find another token and are fenced off. Tokens compare as
-- (epoch, token): the lease bucket's creation time, then the lease's
-- revision in it.
--
-- Parameters (built by `ClaimParams` in fence.rs):
--   $1  int4  the partition
--   $2  int8  the fencing epoch
--   $3  int8  the fencing token
--   $4  text  the owner (worker id)
INSERT INTO partition_fences (partition, epoch, token, owner, updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (partition) DO UPDATE
  SET epoch = EXCLUDED.epoch, token = EXCLUDED.token, owner = EXCLUDED.owner, updated_at = now()
  WHERE (partition_fences.epoch, partition_fences.token) <= (EXCLUDED.epoch, EXCLUDED.token)
RETURNING partition
