-- Live reservations of offer ARGV[9] (read only).
return redis.call('ZCOUNT', P_INFLIGHT .. ARGV[9], '(' .. int(NOW), '+inf')
