// The 256-word list for fingerprint words, one word per byte value. It must stay identical to
// the list in protocol/src/words.rs, because both screens of a visit show words from it.

/** Word for each byte value, indexed by the byte. */
export const WORDS = Object.freeze([
  'acorn', 'actor', 'adult', 'agent', 'alarm', 'album', 'alert', 'alley', 'amber', 'anchor',
  'angle', 'ankle', 'apple', 'april', 'apron', 'arena', 'argue', 'arrow', 'artist', 'aspen',
  'atlas', 'attic', 'audio', 'autumn', 'avocado', 'badge', 'bagel', 'baker', 'bamboo', 'banana',
  'banjo', 'barley', 'barrel', 'basil', 'basket', 'beach', 'beacon', 'bean', 'bear', 'beaver',
  'bell', 'belt', 'bench', 'berry', 'bicycle', 'bison', 'blanket', 'blossom', 'boat', 'bonus',
  'book', 'boot', 'bottle', 'bowl', 'brave', 'bread', 'breeze', 'brick', 'bridge', 'brook',
  'brush', 'bubble', 'bucket', 'buffalo', 'bugle', 'butter', 'button', 'cabin', 'cactus', 'camel',
  'camera', 'canal', 'candle', 'canoe', 'canyon', 'carbon', 'carpet', 'carrot', 'castle', 'cedar',
  'cello', 'chalk', 'cherry', 'chess', 'chimney', 'circle', 'citrus', 'clock', 'cloud', 'clover',
  'coast', 'cobalt', 'cocoa', 'comet', 'copper', 'coral', 'cotton', 'cradle', 'crane', 'crayon',
  'cricket', 'crystal', 'cup', 'curtain', 'daisy', 'dancer', 'delta', 'denim', 'desert', 'diamond',
  'dingo', 'dolphin', 'donkey', 'dove', 'dragon', 'drum', 'eagle', 'echo', 'eclipse', 'elbow',
  'ember', 'engine', 'falcon', 'feather', 'fern', 'fiddle', 'field', 'finch', 'flag', 'flame',
  'flute', 'forest', 'fossil', 'fox', 'garden', 'garlic', 'gecko', 'ginger', 'glacier', 'globe',
  'glove', 'goose', 'granite', 'grape', 'gravel', 'guitar', 'hammer', 'harbor', 'harp', 'hazel',
  'hedge', 'helmet', 'heron', 'hill', 'honey', 'horizon', 'hotel', 'igloo', 'island', 'ivory',
  'jacket', 'jade', 'jaguar', 'jasmine', 'jelly', 'jungle', 'kayak', 'kettle', 'kiwi', 'koala',
  'ladder', 'lagoon', 'lake', 'lantern', 'lemon', 'lily', 'lime', 'linen', 'lion', 'lobster',
  'locket', 'lotus', 'magnet', 'mango', 'maple', 'marble', 'meadow', 'melon', 'mint', 'mirror',
  'moon', 'mosaic', 'moss', 'mountain', 'muffin', 'nectar', 'needle', 'nest', 'noodle', 'oak',
  'oasis', 'ocean', 'olive', 'onion', 'orange', 'orbit', 'orchid', 'otter', 'owl', 'paddle',
  'palm', 'panda', 'paper', 'parrot', 'peach', 'peanut', 'pearl', 'pebble', 'pencil', 'pepper',
  'piano', 'pillow', 'pine', 'planet', 'plum', 'pond', 'poppy', 'potato', 'prairie', 'puzzle',
  'quartz', 'quilt', 'rabbit', 'radio', 'raven', 'reef', 'ribbon', 'river', 'robin', 'rocket',
  'rose', 'saddle', 'salmon', 'sandal', 'satin', 'scarf', 'shell', 'silver', 'sky', 'sparrow',
  'spinach', 'spruce', 'squash', 'star', 'stone', 'sugar',
]);
