-- Withdraw offers by ref (ARGV[9]...); returns the refs that were in the book.
local out = {}
for i = 9, #ARGV do
  if remove_offer(ARGV[i], 'withdrawn') then out[#out + 1] = ARGV[i] end
end
return out
