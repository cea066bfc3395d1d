// Real PNG images for the browser test, made with node:zlib alone.
import zlib from 'node:zlib';

/** The colours of the four quadrants, clockwise from the top left. */
export const QUADRANTS = [[220, 30, 30], [30, 180, 40], [30, 60, 220], [250, 250, 250]];

/**
 * An RGB PNG of `width`×`height` in four coloured quadrants. `level` is the
 * deflate level: 0 stores the pixels, so a big image is big on disk (a
 * multipart upload of real image bytes).
 */
export function quadrantPng(width, height, level = 9) {
  const row = 1 + width * 3;
  const raw = Buffer.alloc(row * height);
  for (let y = 0; y < height; y++) {
    const top = y < height / 2;
    const left = QUADRANTS[top ? 0 : 3];
    const right = QUADRANTS[top ? 1 : 2];
    const line = Buffer.alloc(width * 3);
    for (let x = 0; x < width; x++) line.set(x < width / 2 ? left : right, x * 3);
    line.copy(raw, y * row + 1); // filter byte 0 (none)
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

let table;
function crc32(buf) {
  if (zlib.crc32) return zlib.crc32(buf);
  table ??= Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let c = 0xffffffff;
  for (const b of buf) c = table[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The expected quadrant colour at (x, y) of an image `width`×`height`. */
export function quadrantAt(x, y, width, height) {
  const top = y < height / 2;
  const left = x < width / 2;
  return QUADRANTS[top ? (left ? 0 : 1) : (left ? 3 : 2)];
}
